# Tokens-per-step ladder, fixed steps: batch 192 for 2,000 iterations (24.6M tokens, ~25 epochs). Not tuned here:
# each method runs its best point of the batch192_tokens cell (tuned_from: whole 125-iteration schedules), tuned at
# 1/16 of this length: the lr may well be too high for 2,000 steps; retune (tune_iters = 250, no tuned_from) where
# the ~6 core-hours more are affordable. No AdamW token ladder: its 2x and 4x would be 50 and 100 epochs, and at
# batch 48 (12 and 24 epochs) the ladder already floored from overfitting (1.523, 1.522), so its speedups would
# measure the data, not the optimizers; this cell answers the paired gaps at equal steps (- AdamW, - KFAC), and the
# speedups come from the fixed-tokens cells. Cost on 2 cores (ms/iter from results/scale/timing_batch192_tokens:
# 1.4-1.9 s, 11.2 s summed over the 7 methods): 2 seeds x 2,000 x 11.2 s = ~12 core-hours: a GPU cell, or a run
# over several sessions on the CPU (a stopped run goes on from its last checkpoint).
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch192_steps.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--batch_size=192', '--max_iters=2000', '--lr_decay_iters=2000', '--warmup_iters=100', '--eval_interval=250',
               '--eval_iters=13']
tuned_from = 'results/scale/batch192_tokens/results.json'
tune_iters = None
out_dir = 'out-scale-batch192_steps'
timing = 'results/scale/timing_batch192_tokens/results.json'  # the same step: each method alone on the machine
ladder = None
