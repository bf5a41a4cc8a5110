# Width ladder at the small model's ~1.9 tokens per parameter: n_embd 64, n_head 2 (~0.2M parameters) for 500
# iterations at batch 12 (0.38M tokens; the 128-wide cell is config/studies/compare_all_small.py). Cost: ~1 core-hour.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/width64.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--n_embd=64', '--n_head=2', '--max_iters=500', '--lr_decay_iters=500', '--warmup_iters=25', '--eval_interval=50']
tune_iters = None
out_dir = 'out-scale-width64'
# seconds and ms/iter from config/studies/scale/timing_width64.py (each method alone on the machine; these runs went
# two at a time)
timing = 'results/scale/timing_width64/results.json'
seeds = [1337, 1, 2]  # a third seed: Fixed Fisher and EKFAC swing by ~0.1 between the first two
