# Tokens-per-step ladder, fixed steps: batch 48 for 2,000 iterations (6.1M tokens, ~6 epochs: the model sees each
# token ~6 times, so late val loss also measures overfitting). Not tuned here: each method runs its best point of the
# batch48_tokens cell (tuned_from: its grid on whole 500-iteration schedules, warmup 25), tuned at a quarter of this
# length (a longer run may want a lower lr: a bias against no method in particular, but a bias). eval_iters 50: the
# val tokens of batch 12's 200. Cost on 2 cores (ms/iter from results/scale/timing_batch48_tokens: 0.34-0.55 s, 3.0 s
# summed over the 7 methods): 2 seeds x 2,000 x 3.0 s + AdamW's 4,000 and 8,000 x 2 seeds x 0.34 s = ~6 core-hours
# (~3 hours at jobs = 2).
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch48_steps.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--batch_size=48', '--max_iters=2000', '--lr_decay_iters=2000', '--warmup_iters=100', '--eval_interval=250',
               '--eval_iters=50']
tuned_from = 'results/scale/batch48_tokens/results.json'
tune_iters = None
out_dir = 'out-scale-batch48_steps'
timing = 'results/scale/timing_batch48_tokens/results.json'  # the same step: each method alone on the machine
# three seeds (methods.py's two, and 2): Fixed Fisher - KFAC's two seeds (+0.024, +0.052) left an interval of
# [-0.141, +0.217]; the third costs 2,000 x 3.0 s + AdamW's 2x and 4x = ~2 core-hours.
seeds = [1337, 1, 2]
