# Tokens-per-step ladder, fixed steps: batch 192 for 2,000 iterations (24.6M tokens, ~25 epochs). Not tuned here:
# each method runs its best point of the batch192_tokens cell (tuned_from: whole 125-iteration schedules), tuned at
# 1/16 of this length: the lr may well be too high for 2,000 steps; retune (tune_iters = 250, no tuned_from) where
# the ~6 core-hours more are affordable. Cost on 2 cores (~1.5-2.5 s per iteration): 2 seeds x 2,000 x ~13 s summed
# over the 7 methods + AdamW's 4,000 and 8,000 x 2 seeds x 1.5 s = ~21 core-hours: a GPU cell.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch192_steps.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--batch_size=192', '--max_iters=2000', '--lr_decay_iters=2000', '--warmup_iters=100', '--eval_interval=250',
               '--eval_iters=13']
tuned_from = 'results/scale/batch192_tokens/results.json'
tune_iters = None
out_dir = 'out-scale-batch192_steps'
timing = 'results/scale/timing_batch192_tokens/results.json'  # the same step: each method alone on the machine
