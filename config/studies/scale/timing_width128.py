# ms/iter of the ladders' methods at the small model (128 wide, batch 12: the cell both ladders share, whose runs are
# config/studies/compare_all_small.py's), one run at a time with nothing else on the machine, on the machine that ran
# the other cells: their step-time ratios to AdamW are compared with this one's (compare_all_small's own timing,
# results/timing_all_small/, was measured on another machine). It also calibrates and checks the cost model:
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/timing_width128.py
#   OMP_NUM_THREADS=1 python -m benchmarks.cost_model config/fixed_fisher_small.py --calibrate \
#       --measured=results/scale/timing_width128/results.json
exec(open('config/studies/scale/methods.py').read())  # the methods (run from the root)
train_args += ['--max_iters=100', '--lr_decay_iters=100', '--warmup_iters=100', '--eval_interval=1000',
               '--eval_iters=1']
del tune, seeds, reference, compare_to, ladder, ladder_budgets
jobs = 1
out_dir = 'out-scale-timing-width128'
