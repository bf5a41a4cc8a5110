# Width ladder at ~1.9 tokens per parameter: n_embd 256, n_head 8 (~3.2M parameters) for 8,000 iterations at batch
# 12 (6.1M tokens, ~6 epochs). Tuned on 1,000-iteration runs. Cost (ms/iter ~3x the small model's, ~0.3 s): 39 x
# 1,000 x 0.3 s + 14 x 8,000 x 0.3 s + AdamW's 16,000 and 32,000 x 2 seeds = ~20 core-hours: a GPU cell.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/width256.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--n_embd=256', '--n_head=8', '--max_iters=8000', '--lr_decay_iters=8000', '--warmup_iters=100', '--eval_interval=500']
tune_iters = 1000
out_dir = 'out-scale-width256'
