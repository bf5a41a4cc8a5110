# adamw_small's model, data and schedule, trained with PSGD-Kron (optim/psgd.py, heavyball's PSGDKron) on the
# blocks' 2-D weights and AdamW on the rest, one learning rate for both.
# Tuned on shakespeare_char (300-iteration runs, lr_decay_iters=300, min_lr = lr/10, val loss; AdamW's 6e-3 gives
# 2.325 there): lr 1e-3: 2.371, 3e-3: 2.330, 5e-3: 2.324 (this config), 1e-2: 2.364

out_dir = 'out-psgd-small'
eval_interval = 250
eval_iters = 20
log_interval = 10
always_save_checkpoint = False

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 12
block_size = 64

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0

optimizer = 'psgd'
learning_rate = 5e-3  # PSGD's update is soft-clipped to Adam's per-element scale: AdamW's range
max_iters = 2000
lr_decay_iters = 2000
min_lr = 5e-4
beta2 = 0.99  # the AdamW part; the number of tokens per iteration is small
warmup_iters = 100

device = 'cpu'
compile = False
