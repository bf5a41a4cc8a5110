# Tokens-per-step ladder, fixed steps: batch 48 for 2,000 iterations (6.1M tokens, ~6 epochs: the model sees each
# token ~6 times, so late val loss also measures overfitting). Tuned on 500-iteration runs. Cost: 39 x 500 x 0.4 s +
# 14 x 2,000 x 0.4 s + the ladder (4,000 and 8,000 iterations x 2 seeds, AdamW ~0.3 s) = ~20 core-hours: a GPU cell.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch48_steps.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--batch_size=48', '--max_iters=2000', '--lr_decay_iters=2000', '--warmup_iters=100', '--eval_interval=250']
tune_iters = 500
out_dir = 'out-scale-batch48_steps'
