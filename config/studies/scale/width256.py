# Width ladder at ~1.9 tokens per parameter: n_embd 256, n_head 8 (~3.2M parameters) for 8,000 iterations at batch 12
# (6.1M tokens, ~6 epochs). Tuned on 1,000-iteration runs. Cost (ms/iter ~3x the small model's: AdamW ~0.2 s, KFAC
# ~0.33, Fixed Fisher ~0.5 s on one core): 39 x 1,000 x 0.4 s + 14 x 8,000 x 0.4 s + AdamW's 16,000 and 32,000 x 2
# seeds x 0.2 s = ~22 core-hours. No GPU has been lent, so it runs on the CPU over several sessions: each finished
# run's records land in results/scale/width256/runs/ (commit them), and the next `study.py` reads them and goes on.
# The 1,000-iteration tuning runs come first (~5 min each); a run in flight at a session's stop goes on from its last
# checkpoint (every 500 iterations) when the study runs again in the same out_dir.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/width256.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--n_embd=256', '--n_head=8', '--max_iters=8000', '--lr_decay_iters=8000', '--warmup_iters=100', '--eval_interval=500']
tune_iters = 1000
# AdamW's token ladder stops at 2x here: its 4x at seed 1337 (32,000 iterations, 24 epochs) overfits, 1.619 against
# the 2x's 1.528 (its val loss bottoms out near 1.53 by ~23k iterations), so the ladder's running minimum already floors
# at 2x; a 4x at seed 1 would cost ~2 core-hours to say the same. Methods below the 2x's loss read '> 2x'. (That 4x
# run stays in runs/, outside the ladder.)
ladder_budgets = [1, 2]
out_dir = 'out-scale-width256'
timing = 'results/scale/timing_width256/results.json'  # seconds and ms: each method alone on the machine (Intel Xeon)
