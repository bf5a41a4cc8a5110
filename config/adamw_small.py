# The small model every optimizer is compared on: a 4-layer, 128-wide character GPT on tiny Shakespeare that
# trains in a few minutes on 2 CPU cores. config/<optimizer>_small.py change only the optimizer.

out_dir = 'out-adamw-small'
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

optimizer = 'adamw'
# tuned on shakespeare_char (val loss after 2000 iterations): lr 1e-3 (nanoGPT's): 1.905, lr 6e-3: 1.758;
# after 500 iterations (lr_decay_iters=500): 1e-3: 2.317, 3e-3: 2.181, 6e-3: 2.128
learning_rate = 6e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 6e-4
beta2 = 0.99  # the number of tokens per iteration is small
warmup_iters = 100

device = 'cpu'
compile = False
