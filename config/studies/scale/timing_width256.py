# ms/iter of the width256 cell's methods, one run at a time with nothing else on the machine (train.py on one thread),
# as timing_width64.py times its cell: the cell's seconds and ms columns come from here (the cell names it as its
# `timing`; its runs went over several sessions and machines, some beside another study). 100 iterations each at each
# config's own lr, warmup spanning the run; ms columns are medians over windows of 10 iterations. About
# 4 minutes on one core. It is also the cost model's widest check:
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/timing_width256.py
#   OMP_NUM_THREADS=1 python -m benchmarks.cost_model config/fixed_fisher_small.py --set=n_embd=256 --set=n_head=8 \
#       --calibrate --measured=results/scale/timing_width256/results.json
exec(open('config/studies/scale/width256.py').read())  # the cell's methods and arguments (run from the root)
# λ 1e-2 for the damped methods: ekfac_small's own 1e-1 diverges by iteration 20 at this width (as in the cell's grid);
# λ does not change what a step computes
train_args += ['--max_iters=100', '--lr_decay_iters=100', '--warmup_iters=100', '--eval_interval=1000',
               '--eval_iters=1', '--damping=1e-2']
del tune, seeds, reference, compare_to, ladder, ladder_budgets, tune_iters
timing = None
jobs = 1
out_dir = 'out-scale-timing-width256'
