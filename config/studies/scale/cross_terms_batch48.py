# The cross-term ablation (config/studies/ablations/cross_terms.py: fixed_fisher with cross_terms = gamma, 0 is Fixed
# Fisher, 1 KFAC's damping in the same eigenbasis solve) at the batch48_tokens cell's 3,072 tokens per step: does the
# best gamma (1 at batch 12, 768 tokens) move as the factors' batch grows? lr 3e-3 (Fixed Fisher's and KFAC's best
# there), lambda tuned per gamma (their bests there: 1e1 and 1), three seeds, paired against gamma 0 and gamma 1.
# eval_iters 50: the val tokens of batch 12's 200. Cost: ~14 grid runs + 8 seeds x 500 x 0.47 s + evaluations =
# ~1.7 core-hours.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/cross_terms_batch48.py
runs = [f'config/fixed_fisher_small.py:cross_terms={gamma}' for gamma in ('0.0', '0.25', '0.5', '1.0')]
train_args = ['--batch_size=48', '--max_iters=500', '--lr_decay_iters=500', '--warmup_iters=25', '--eval_interval=50',
              '--eval_iters=50', '--min_lr=0.0', '--log_interval=10', '--learning_rate=3e-3']
tune = ['damping=1e-1,1,1e1']
max_grid_extensions = 2
seeds = [1337, 1, 2]
reference = 'fixed_fisher_small cross_terms=0.0'
compare_to = ['fixed_fisher_small cross_terms=1.0']
plot_vs = 'cross_terms'
out_dir = 'out-scale-cross-terms-batch48'
jobs = 2
