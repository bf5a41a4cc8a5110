# How much of the Fixed-Fisher-vs-KFAC gap the cross terms explain: fixed_fisher with cross_terms = gamma, the
# damped Fisher A(x)G + lambda I + gamma (beta A(x)I + alpha I(x)G) (optim/solves.py), gamma 0 (Fixed Fisher) to 1
# (KFAC's (A + alpha I)(x)(G + beta I)), in the same eigenbasis solve, on the same refresh schedule, with the same
# relative lambda: nothing but gamma changes. lambda 1e-1 is where both ends were best in
# config/studies/ablations/damping.py (one seed), 3e-2 and 3e-1 on either side of it. Three seeds, paired against
# gamma 0 at lambda 1e-1.
#   OMP_NUM_THREADS=1 python study.py config/studies/ablations/cross_terms.py
# Cost: 15 runs x 3 seeds x 1000 iterations x ~180 ms (fixed_fisher_small) = 8,100 s, plus evaluations
# (11 x 200 batches x ~14 ms x 45 runs = 1,400 s): about 2.6 core-hours, 1.3 hours at jobs = 2.
runs = [f'config/fixed_fisher_small.py:damping={lam},cross_terms={gamma}' for lam in ('3e-2', '1e-1', '3e-1')
        for gamma in ('0.0', '0.25', '0.5', '0.75', '1.0')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
seeds = [1337, 1, 2]
reference = 'fixed_fisher_small damping=1e-1 cross_terms=0.0'
out_dir = 'out-ablation-cross-terms'
jobs = 2
plot_vs = 'cross_terms'  # final_val_loss_vs_cross_terms.png: a line per lambda
# gamma against gamma 0 at each lambda, and against gamma 1 at 1e-1, paired (the other Delta columns of results.md)
compare_to = ['fixed_fisher_small damping=3e-2 cross_terms=0.0', 'fixed_fisher_small damping=3e-1 cross_terms=0.0',
              'fixed_fisher_small damping=1e-1 cross_terms=1.0']
