# Tokens-per-step ladder, fixed steps: batch 192 for 2,000 iterations (24.6M tokens, ~25 epochs). Not tuned here:
# each method runs the best point of the 125-iteration batch192_tokens cell (tuned_from). Cost on 2 cores (~1.4-2 s
# per iteration): 2 seeds x 2,000 x ~11 s summed over the 7 methods + AdamW's 4,000 and 8,000 x 2 seeds x 1.4 s =
# ~21 core-hours: a GPU cell.
#   OMP_NUM_THREADS=1 python study.py config/studies/scale/batch192_steps.py
exec(open('config/studies/scale/methods.py').read())  # the methods, grid, seeds, references (run from the root)
train_args += ['--batch_size=192', '--max_iters=2000', '--lr_decay_iters=2000', '--warmup_iters=100', '--eval_interval=250',
               '--eval_iters=13']
tuned_from = 'results/scale/batch192_tokens/results.json'
tune_iters = None
out_dir = 'out-scale-batch192_steps'
