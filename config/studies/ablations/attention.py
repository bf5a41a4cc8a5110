# Softmax attention against delta-rule fast weights (linear_attention.py: DPFP features, learned beta) under
# AdamW, KFAC and Fixed Fisher, each with its small config. 1000 iterations.
#   python study.py config/studies/ablations/attention.py
runs = [f'config/{name}_small.py:attention={attention}' for name in ('adamw', 'kfac', 'fixed_fisher')
        for attention in ('softmax', 'delta')]
train_args = ['--max_iters=1000', '--lr_decay_iters=1000', '--min_lr=0.0', '--eval_interval=100',
              '--eval_iters=200', '--log_interval=10']
out_dir = 'out-ablation-attention'
jobs = 2
seeds = [1337, 1, 2]  # its conclusion rests on gaps below 0.05: three seeds, paired
reference = 'adamw_small attention=softmax'  # each delta run paired with its optimizer's softmax run
compare_to = ['kfac_small attention=softmax', 'fixed_fisher_small attention=softmax', 'adamw_small attention=delta',
              'kfac_small attention=delta']
