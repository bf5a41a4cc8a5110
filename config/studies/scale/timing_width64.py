# ms/iter of the width64 cell's methods, one run at a time with nothing else on the machine (train.py on one thread),
# as config/studies/timing_all_small.py times the small model: the cell's seconds and ms columns come from here (the
# cell names it as its `timing`; its own runs went two at a time). 100 iterations each at each config's own lr and
# damping, warmup spanning the run; ms columns are medians over windows of 10 iterations.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/timing_width64.py
exec(open('config/studies/scale/width64.py').read())  # the cell's methods and arguments (run from the root)
train_args += ['--max_iters=100', '--lr_decay_iters=100', '--warmup_iters=100', '--eval_interval=1000',
               '--eval_iters=1']
del tune, seeds, reference, compare_to, ladder, ladder_budgets, tune_iters
timing = None
jobs = 1
out_dir = 'out-scale-timing-width64'
