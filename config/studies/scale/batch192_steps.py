# Tokens-per-step ladder, fixed steps: batch 192 for 2,000 iterations (24.6M tokens, ~25 epochs). Tuned on
# 250-iteration runs. Cost: 39 x 250 x 1.5 s + 14 x 2,000 x 1.5 s + the ladder = ~30 core-hours: a GPU cell.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch192_steps.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--batch_size=192', '--max_iters=2000', '--lr_decay_iters=2000', '--warmup_iters=100', '--eval_interval=250']
tune_iters = 250
out_dir = 'out-scale-batch192_steps'
