# The README's results: each optimizer's small config (config/<name>_small.py: same model, data, seed, batches and
# 2000 iterations), each tuned on the same learning-rate grid, every run's schedule the same cosine to 0 after 100
# warmup iterations. Steps and seconds to the tuned AdamW's final val loss; plots in out_dir.
#   python study.py config/studies/compare_small.py
# Quicker look: python study.py config/studies/compare_small.py --max_iters=200 --lr_decay_iters=200 --out_dir=out-try --results_dir=out-try
runs = [
    'config/adamw_small.py',
    'config/kfac_small.py',
    'config/fixed_fisher_small.py',
    'config/muon_small.py',
    'config/soap_small.py',
]
train_args = ['--min_lr=0.0', '--eval_interval=100', '--log_interval=10']
tune = ['lr=1e-3,3e-3,6e-3,1e-2']  # each config's learning_rate is replaced by the grid's
target_loss = 'adamw_small'
out_dir = 'out-compare-small'
jobs = 2  # two runs at a time (train.py on one thread each: OMP_NUM_THREADS=1 for steady timings)
