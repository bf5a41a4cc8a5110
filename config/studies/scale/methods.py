# What every cell of the two scale ladders runs (issue 16): the small configs of the methods the ladders follow, each
# tuned on lr (and damping for the damped Kronecker methods) as config/studies/compare_all_small.py does, two seeds at
# the best points, paired to AdamW and to KFAC, with AdamW's token ladder for the speedups. A cell file executes this
# one, then sets its own tokens per step, width and length. Not a study by itself (it has no out_dir).
runs = [f'config/{name}_small.py' for name in ('adamw', 'kfac', 'fixed_fisher', 'ekfac', 'muon', 'soap', 'psgd')]
train_args = ['--min_lr=0.0', '--eval_iters=200', '--log_interval=10']
tune = ['lr=1e-3,3e-3,1e-2', 'damping=1e-2,1e-1,1']
max_grid_extensions = 2
seeds = [1337, 1]
reference = 'adamw_small'
compare_to = ['kfac_small']
ladder = 'adamw_small'
ladder_budgets = [1, 2, 4]
jobs = 2
