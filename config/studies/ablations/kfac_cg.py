# A second path from KFAC to Fixed Fisher, without eigendecompositions: fixed_fisher with solve='kfac_cg' takes
# cg_steps of conjugate gradients on (A(x)G + lambda I) vec(U) = vec(V) preconditioned by KFAC's damped inverse, from
# KFAC's answer (optim/solves.py): 0 steps is KFAC, more approach Fixed Fisher's exact damped inverse. Val loss and
# ms/iter for 0, 1, 2 and 4 steps against the eigenbasis solve (the config's own, solve='eigen'), three seeds, paired
# against it. Its fixed_fisher_small runs have the same arguments as eigen_refresh.py's: study.py reads them from
# results/ablations/kfac_cg/runs/ when they are copied there, rather than running them again.
#   OMP_NUM_THREADS=1 python study.py config/studies/ablations/kfac_cg.py
# Cost: 5 runs x 3 seeds x 1000 iterations x ~180 ms = 2,700 s plus evaluations: about 1 core-hour.
runs = ['config/fixed_fisher_small.py'] + \
       [f'config/fixed_fisher_small.py:solve=kfac_cg,cg_steps={k}' for k in (0, 1, 2, 4)]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
seeds = [1337, 1, 2]
reference = 'fixed_fisher_small'
out_dir = 'out-ablation-kfac-cg'
jobs = 2
compare_to = ['fixed_fisher_small solve=kfac_cg cg_steps=0']  # and against KFAC's answer (0 steps), paired
# seconds and ms/iter from config/studies/timing_all_small.py (each arm alone on the machine; these runs went two at a
# time, which slows both): its rows have these runs' names
timing = 'results/timing_all_small/results.json'
