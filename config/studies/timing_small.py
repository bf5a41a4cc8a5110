# Milliseconds per iteration of the small configs, one run at a time (nothing else on the machine, train.py on one
# thread: OMP_NUM_THREADS=1), at the configs' 768 tokens per iteration (batch 12) and at 4x that (batch 48): the
# Kronecker methods' extra cost per step is fixed by the layer widths, so it shrinks against forward+backward as
# the tokens per step grow. 100 iterations each; the ms columns are medians over windows of 10 iterations, each
# holding one factor update and one decomposition.
#   OMP_NUM_THREADS=1 python study.py config/studies/timing_small.py
runs = [f'config/{name}_small.py:batch_size={batch}' for batch in (12, 48)
        for name in ('adamw', 'kfac', 'fixed_fisher', 'muon', 'soap')]
train_args = ['--max_iters=100', '--lr_decay_iters=100', '--warmup_iters=10', '--eval_interval=1000',
              '--eval_iters=1', '--log_interval=10']
out_dir = 'out-timing-small'
jobs = 1
