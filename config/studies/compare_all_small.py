# Every optimizer on the small model (config/<name>_small.py: same model, data and 2000 iterations, warmup 100 then
# cosine to 0), each tuned on the same grid, at three seeds, against AdamW: the mean final val loss and its 95%
# interval, the paired difference to AdamW seed by seed, and the speedup in tokens and in seconds against AdamW's
# ladder (AdamW at 1x, 2x and 4x the tokens, Wen et al. 2025). Results, plots and every run's records in
# results/compare_all_small/ (a stopped study restarts from there, on any machine); checkpoints in out_dir.
#   OMP_NUM_THREADS=1 python study.py config/studies/compare_all_small.py
# Quicker look: ... --tune_iters=100 --max_iters=200 --lr_decay_iters=200 --out_dir=out-try --results_dir=out-try
#
# Cost, from the small configs' ms/iter with two runs at a time on 2 cores (README: adamw 105, kfac 143,
# fixed_fisher 177, muon 165, soap 230; eva, ekfac, iekfac, ief, kpsvd, kfac_corrected, dykaf and psgd taken as
# 200): all 13 sum to 2420 ms an iteration, the 8 that take a damping (tuned on lr x damping, 9 points) to 1520,
# the other 5 (lr only, 3 points) to 900.
#   tuning, seed 1337, 500 iterations:  500 x (9 x 1520 + 3 x 900) ms       = 8,190 s   2.3 core-h
#   grid extensions, ~1 per optimizer:  500 x 2420 ms                       = 1,210 s   0.3 (at most 1.1)
#   best points, 2000 iterations x 3 seeds: 3 x 2000 x 2420 ms             = 14,520 s  4.0
#   AdamW's ladder, 4000 + 8000 iterations x 3 seeds: 3 x 12000 x 105 ms   = 3,780 s   1.1
#   evaluations, ~5.7 s each (200 batches of each split), every 250 iterations: 100 tuning runs x 3,
#     39 full runs x 9, the ladder 3 x (17 + 33): 801 x 5.7 s              = 4,570 s   1.3
#   process starts (torch import, data), ~5 s x ~150 runs                  =   750 s   0.2
#   total about 9 core-h (10 at most): 4.5-5 hours at jobs = 2, two 3-hour sessions on 2 cores.
# What keeps it there: the grid runs 500 iterations (tune_iters; the configs were tuned that way, and AdamW's best
# lr at 500 iterations, 6e-3, is its best at 2000: README), full length only at the best points. The grid at the
# full length would cost about 16 core-h (three sessions).
#
# eval_iters 200: the standard error of the final val loss (sd of the batch losses / sqrt(eval_iters)), measured
# with eval_only on config/adamw_small.py's 2000-iteration checkpoint, is 0.021 at eval_iters 20 (the configs'),
# 0.0087 at 100 and 0.0057 at 200, against a seed spread of about 0.02: at 200 evaluation noise is under a tenth of
# the seeds' variance (and every run is evaluated on the same batches, so it cancels further in the differences).
#
# The damping grid assumes relative damping (damping_mode = 'relative', as kfac_small and fixed_fisher_small; their
# lambda 1e-1 was the best of 1e-3..1 in config/studies/ablations/damping.py); study.py tunes damping only for the
# optimizers that take it (tuned_here), lr for all.
runs = [f'config/{name}_small.py' for name in (
    'adamw', 'kfac', 'fixed_fisher', 'eva', 'ekfac', 'iekfac', 'ief', 'kpsvd', 'kfac_corrected', 'dykaf', 'muon',
    'soap', 'psgd')]
train_args = ['--min_lr=0.0', '--eval_interval=250', '--eval_iters=200', '--log_interval=10']
tune = ['lr=1e-3,3e-3,1e-2', 'damping=1e-2,1e-1,1']  # each config's learning_rate and damping replaced by the grid's
tune_iters = 500
max_grid_extensions = 2
seeds = [1337, 1, 2]
reference = 'adamw_small'
compare_to = ['kfac_small', 'fixed_fisher_small']  # paired differences to KFAC and Fixed Fisher too
ladder = 'adamw_small'
ladder_budgets = [1, 2, 4]
target_loss = 'adamw_small'
out_dir = 'out-compare-all-small'
jobs = 2  # two runs at a time (train.py on one thread each: OMP_NUM_THREADS=1 for steady timings)
# seconds and ms/iter from config/studies/timing_all_small.py (each config alone on the machine): this study ran two
# at a time beside other work, so its own seconds are not comparable across runs
timing = 'results/timing_all_small/results.json'
