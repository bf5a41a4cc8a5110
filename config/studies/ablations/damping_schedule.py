# A constant lambda against the Levenberg-Marquardt rule (damping_schedule='lm': lambda follows the reduction ratio
# of the exact-Fisher quadratic model every 5 iterations, Martens & Grosse 2015) for KFAC and Fixed Fisher, both
# starting from their configs' lambda. The train records log lambda ('damping') and the ratio ('lm_ratio').
# 1000 iterations. Found: with grafting (these configs) rho stays near 1 and lambda falls to its floor (README).
#   python study.py config/studies/ablations/damping_schedule.py
runs = [f'config/{name}_small.py:damping_schedule={schedule}' for name in ('kfac', 'fixed_fisher')
        for schedule in ('constant', 'lm')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--log_interval=10']
out_dir = 'out-ablation-damping-schedule'
jobs = 2
