# Every token a sample ('expand') or every sequence one ('reduce', Eschenhagen et al. 2023: a sequence's mean input
# and its output gradients' sum / sqrt(T), optim/capture.py) for KFAC and Fixed Fisher at their small configs:
# val loss and the factor capture's ms (ms_factors), three seeds, paired against expand (the configs' own setting:
# those runs have the same arguments as martens_grosse_alpha.py's, and are read from its runs when copied here).
#   OMP_NUM_THREADS=1 python study.py config/studies/ablations/kfac_approx.py
# Cost: 4 runs x 3 seeds x 1000 iterations x ~0.1 s + evaluations: about 0.5 core-hours.
runs = [f'config/{name}_small.py{approx}' for name in ('kfac', 'fixed_fisher')
        for approx in ('', ':kfac_approx=reduce')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
seeds = [1337, 1, 2]
reference = 'kfac_small'
compare_to = ['fixed_fisher_small']
out_dir = 'out-ablation-kfac-approx'
jobs = 2
# seconds and ms/iter from config/studies/timing_all_small.py (each arm alone on the machine; these runs went two at a
# time, which slows both): its rows have these runs' names
timing = 'results/timing_all_small/results.json'
