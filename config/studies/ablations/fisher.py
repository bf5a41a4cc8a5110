# Empirical Fisher (the training labels' gradients, free) against the true Fisher (labels sampled from the model's
# softmax on factor-update steps: one more backward) for KFAC and Fixed Fisher. 1000 iterations.
#   python study.py config/studies/ablations/fisher.py
runs = [f'config/{name}_small.py:fisher={fisher}' for name in ('kfac', 'fixed_fisher')
        for fisher in ('empirical', 'sampled')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
out_dir = 'out-ablation-fisher'
jobs = 2
seeds = [1337, 1, 2]  # its conclusion rests on gaps below 0.05: three seeds, paired
reference = 'kfac_small fisher=empirical'
compare_to = ['fixed_fisher_small fisher=empirical', 'kfac_small fisher=sampled']
