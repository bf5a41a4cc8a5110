# Tokens-per-step ladder, fixed tokens: batch 192 (12,288 tokens per step) for 125 iterations, the same 1.54M tokens
# (1.5 epochs). Cost: ms/iter ~16x batch 12's (~1.5 s): 53 runs x 125 x 1.5 s + the ladder = ~3.5 core-hours.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch192_tokens.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
# eval_iters 13: the val tokens of an evaluation (13 x 192 sequences) as at batch 12's 200 (a noise, not a cost, to hold)
train_args += ['--batch_size=192', '--max_iters=125', '--lr_decay_iters=125', '--warmup_iters=6', '--eval_interval=25',
               '--eval_iters=13']
tune_iters = None
# three seeds (methods.py's two, and 2), as at batch 48: the third costs 7 x 125 x 1.6 s + AdamW's 2x and 4x = ~0.7
# core-hours
seeds = [1337, 1, 2]
out_dir = 'out-scale-batch192_tokens'
# seconds and ms/iter from config/studies/scale/timing_batch192_tokens.py (each method alone on the machine; these runs
# went two at a time)
timing = 'results/scale/timing_batch192_tokens/results.json'
