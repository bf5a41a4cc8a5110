# Tokens-per-step ladder, fixed tokens: the small model at batch 48 (3,072 tokens per step) for 500 iterations, the
# 1.54M tokens of the batch-12 cell (config/studies/compare_all_small.py: 2,000 x 768), 1.5 epochs of
# shakespeare_char's ~1M training tokens as there. Cost on 2 cores (ms/iter ~4x batch 12's, ~400 for the Kronecker
# methods): 39 grid points x 500 x 0.4 s + 14 full runs x 500 x 0.4 s + AdamW's 2x and 4x x 2 seeds = ~4 core-hours.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch48_tokens.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--batch_size=48', '--max_iters=500', '--lr_decay_iters=500', '--warmup_iters=25', '--eval_interval=50']
tune_iters = None
# three seeds (methods.py's two, and 2): Fixed Fisher's first two ended 0.26 apart
seeds = [1337, 1, 2]
out_dir = 'out-scale-batch48_tokens'
# seconds and ms/iter from config/studies/scale/timing_batch48_tokens.py (each method alone on the machine; these runs went
# two at a time)
timing = 'results/scale/timing_batch48_tokens/results.json'
