# Milliseconds per iteration of all 13 small configs, one run at a time (nothing else on the machine, train.py on one
# thread: OMP_NUM_THREADS=1), at the configs' 768 tokens per iteration: the ms/iter column of README's comparison
# (config/studies/compare_all_small.py ran two at a time); and of the arms whose cost an ablation reports: the two M&G
# configs (the quadratic rule's cost) and the same with alpha alone (ablations/martens_grosse_alpha.py), Fixed Fisher
# by CG from KFAC's answer (ablations/kfac_cg.py), the reduce capture (ablations/kfac_approx.py). 100 iterations
# each, at each config's own lr and damping (the time of a step does not depend on them), the configs' 100 warmup
# iterations spanning the run so that no step is taken at full lr from an untrained model; the ms columns are medians
# over windows of 10 iterations, each holding one factor update and one decomposition. About 6 minutes.
#   OMP_NUM_THREADS=1 python study.py config/studies/timing_all_small.py
runs = [f'config/{name}_small.py' for name in (
    'adamw', 'kfac', 'fixed_fisher', 'eva', 'ekfac', 'iekfac', 'ief', 'kpsvd', 'kfac_corrected', 'dykaf', 'muon',
    'soap', 'psgd', 'kfac_mg', 'fixed_fisher_mg')] + \
    [f'config/fixed_fisher_small.py:solve=kfac_cg,cg_steps={k}' for k in (0, 1, 2, 4)] + \
    [f'config/{name}_small.py:kfac_approx=reduce' for name in ('kfac', 'fixed_fisher')] + \
    [f'config/{name}_mg_small.py:momentum=0.0' for name in ('kfac', 'fixed_fisher')]  # alpha alone
train_args = ['--max_iters=100', '--lr_decay_iters=100', '--eval_interval=1000',
              '--eval_iters=1', '--log_interval=10']
out_dir = 'out-timing-all-small'
jobs = 1
