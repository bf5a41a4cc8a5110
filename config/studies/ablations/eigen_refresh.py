# Fixed Fisher's eigenbases between full eigendecompositions (every 50 or 100 iterations): kept as they are
# ('none') or refreshed on every factor update (every 10) by one power iteration + QR from the previous basis ('qr',
# SOAP's refresh). 1000 iterations, as the other ablations.
#   python study.py config/studies/ablations/eigen_refresh.py
runs = ['config/fixed_fisher_small.py'] + \
       [f'config/fixed_fisher_small.py:inv_update_freq={inv},eigen_refresh={how}' for inv in (50, 100)
                                                                            for how in ('none', 'qr')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
out_dir = 'out-ablation-eigen-refresh'
jobs = 2
seeds = [1337, 1, 2]  # its conclusion rests on gaps below 0.05: three seeds, paired
reference = 'fixed_fisher_small'  # eigh every 10 iterations, the config
compare_to = ['fixed_fisher_small inv_update_freq=50 eigen_refresh=none',  # QR against keeping the bases, paired
              'fixed_fisher_small inv_update_freq=100 eigen_refresh=none']
