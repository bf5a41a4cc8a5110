# The step size alone from the quadratic model (Martens & Grosse 2015, section 7, with momentum 0: mu = 0,
# alpha = -grad h^T Delta / Delta^T (F + lambda I) Delta, the lr only a cap), with Levenberg-Marquardt lambda and no
# grafting, for KFAC and Fixed Fisher (config/{kfac,fixed_fisher}_mg_small.py with momentum=0.0), started from two
# lambda a decade apart (does the LM rule remove the need to tune lambda?), against the grafted small configs and
# AdamW: three seeds, paired against the grafted KFAC. 1000 iterations. martens_grosse.py has the recipe with momentum.
# Its adamw_small, kfac_small and fixed_fisher_small runs have the same arguments as kfac_approx.py's and
# eigen_refresh.py's, and are read from them when copied into results/ablations/martens_grosse_alpha/runs/.
#   OMP_NUM_THREADS=1 python study.py config/studies/ablations/martens_grosse_alpha.py
# Cost: 4 runs x 3 seeds x 1000 iterations x ~0.17 s (one forward-mode pass a step) + evaluations, and the three
# references: about 1 core-hour.
runs = ['config/adamw_small.py', 'config/kfac_small.py', 'config/fixed_fisher_small.py'] + \
       [f'config/{name}_mg_small.py:momentum=0.0,damping={lam}' for name in ('kfac', 'fixed_fisher')
        for lam in ('1e-1', '1e-2')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
seeds = [1337, 1, 2]
reference = 'kfac_small'
compare_to = ['adamw_small', 'fixed_fisher_small']
out_dir = 'out-ablation-martens-grosse-alpha'
jobs = 2
