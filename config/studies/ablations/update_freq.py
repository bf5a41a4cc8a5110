# How often Fixed Fisher refreshes its factors and eigendecompositions: every 5, 10 (its config), 20 and 50
# iterations (factors and eigh together). Fewer refreshes cost less (ms/iter) and see staler curvature.
# 1000 iterations (the whole schedule, shortened) to keep the ablations cheap on a CPU.
#   python study.py config/studies/ablations/update_freq.py
runs = [f'config/fixed_fisher_small.py:factor_update_freq={f},inv_update_freq={f}' for f in (5, 10, 20, 50)]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
out_dir = 'out-ablation-update-freq'
jobs = 2
seeds = [1337, 1, 2]  # its conclusion rests on gaps below 0.05: three seeds, paired
reference = 'fixed_fisher_small factor_update_freq=10 inv_update_freq=10'  # the config
