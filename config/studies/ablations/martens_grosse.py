# KFAC and Fixed Fisher as Martens & Grosse ran KFAC (config/{kfac,fixed_fisher}_mg_small.py: alpha and mu from
# the quadratic model, Levenberg-Marquardt lambda, no grafting) against their grafted small configs and AdamW, with
# the LM rule started from two lambda a decade apart (does adaptive damping remove the need to tune lambda?), three
# seeds, paired against the grafted KFAC. 1000 iterations.
#   OMP_NUM_THREADS=1 python study.py config/studies/ablations/martens_grosse.py
# Cost: the quadratic rule adds two forward-mode passes (~3 forwards) per step, the LM rule one more every 5: ~2x
# the small configs' step. 8 runs x 3 seeds x 1000 iterations x ~0.15 s (0.3 s for the mg runs) + evaluations:
# about 1.5 core-hours.
runs = ['config/adamw_small.py', 'config/kfac_small.py', 'config/fixed_fisher_small.py'] + \
       [f'config/{name}_mg_small.py:damping={lam}' for name in ('kfac', 'fixed_fisher') for lam in ('1e-1', '1e-2')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
seeds = [1337, 1, 2]
reference = 'kfac_small'
compare_to = ['adamw_small', 'fixed_fisher_small']
out_dir = 'out-ablation-martens-grosse'
jobs = 2
