# ms/iter of the batch192_tokens cell's methods, one run at a time with nothing else on the machine (train.py on one thread),
# as config/studies/scale/timing_batch48_tokens.py times its cell: the cell's seconds and ms columns come from here (the
# cell names it as its `timing`; its own runs went two at a time). 60 iterations each (a step is ~1.5 s here) at each
# config's own lr and damping, warmup spanning the run; ms columns are medians over windows of 10 iterations (each
# holds one factor update and one decomposition).
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/timing_batch192_tokens.py
exec(open('config/studies/scale/batch192_tokens.py').read())  # the cell's methods and arguments (run from the root)
train_args += ['--max_iters=60', '--lr_decay_iters=60', '--warmup_iters=60', '--eval_interval=1000',
               '--eval_iters=1']
del tune, seeds, reference, compare_to, ladder, ladder_budgets, tune_iters
timing = None
jobs = 1
out_dir = 'out-scale-timing-batch192_tokens'
