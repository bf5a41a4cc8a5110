# adamw_small's model, data and schedule with delta-rule fast weights: DPFP features, sum-normalised keys and
# queries, a learned beta per head (Schlag, Irie & Schmidhuber 2021, the paper's best). Only the attention differs from
# adamw_small at nanoGPT's lr 1e-3 (val loss after 2000 iterations: softmax 1.905, linear 2.057, delta 1.877).

out_dir = 'out-delta-small'
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
attention = 'delta'

optimizer = 'adamw'
learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99  # the number of tokens per iteration is small
warmup_iters = 100

device = 'cpu'
compile = False
