# The small configs as they are (their own learning rates, warmup 100, cosine to lr/10 over 2000 iterations, eval
# every 250 on 20 batches): one seed each, not tuned against each other (config/studies/compare_small.py is the
# tuned comparison). Plus AdamW, linear and delta-rule attention at nanoGPT's lr 1e-3, and nanoGPT's baby GPT
# (config/train_shakespeare_char.py) cut to the small model and its CPU settings (nanoGPT documents about 1.88).
#   OMP_NUM_THREADS=1 python study.py config/studies/configs_small.py
runs = [
    'config/adamw_small.py',
    'config/kfac_small.py',
    'config/fixed_fisher_small.py',
    'config/eva_small.py',
    'config/adamw_small.py:learning_rate=1e-3',
    'config/linear_small.py',
    'config/delta_small.py',
    'config/train_shakespeare_char.py:device=cpu,compile=False,eval_iters=20,block_size=64,batch_size=12,n_layer=4,'
    'n_head=4,n_embd=128,max_iters=2000,lr_decay_iters=2000,dropout=0.0',
]
out_dir = 'out-configs-small'
jobs = 2
