# The cross-term question: KFAC and Fixed Fisher at the same lambda, everything else the same (their small configs:
# relative damping lambda (tr A/dim A)(tr G/dim G), Adam grafting, momentum 0.9, factors and inverses every 10
# iterations; 2000 iterations, schedule as config/studies/compare_small.py). Fixed Fisher inverts A(x)G + lambda I
# exactly; KFAC inverts (A + pi sqrt(lambda) I)(x)(G + sqrt(lambda)/pi I), whose two cross terms add damping.
#   python study.py config/studies/ablations/damping.py
runs = [f'config/{name}_small.py:damping={lam}' for lam in ('1e-3', '1e-2', '1e-1', '1')
        for name in ('kfac', 'fixed_fisher')]
train_args = ['--min_lr=0.0', '--eval_interval=100', '--eval_iters=200', '--log_interval=10']
out_dir = 'out-ablation-damping'
jobs = 2
seeds = [1337, 1, 2]  # its conclusion rests on gaps below 0.05: three seeds, paired
# each Fixed Fisher run is paired with KFAC at its own lambda (the column of that lambda's KFAC run)
reference = 'kfac_small damping=1e-1'
compare_to = ['kfac_small damping=1e-3', 'kfac_small damping=1e-2', 'kfac_small damping=1']
