# adamw_small's model, data and schedule, trained with Fixed Fisher (optim/fixed_fisher.py): the exact damped
# Kronecker inverse (A(x)G + lambda I)^-1, without the cross terms of KFAC's factored damping.
# Tuned on shakespeare_char (500-iteration runs, val loss; AdamW's best there is 2.128 at lr 6e-3, KFAC's 2.075):
#   relative damping 1e-3 / 1e-2 / 1e-1 + grafting: 2.312 / 2.304 / 2.166 (this config)
#   absolute damping 1e-2 + grafting: 2.275;  relative 1e-2 with the KL clip (1e-3) instead of grafting: 3.355
#   eigh every 100 steps + QR refresh every 10 (relative 3e-1 / 1): 2.235 / 2.229;  relative 3e-1: 2.209
#   lr 2e-3: 2.142 at 500, but 1.695 against 1.675 at lr 1e-3 after 2000 iterations (the full schedule)

out_dir = 'out-fixed-fisher-small'
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

optimizer = 'fixed_fisher'
damping_mode = 'relative'  # lambda times the layer's mean eigenvalue of A(x)G: one lambda fits every layer
damping = 1e-1
grafting = 'adam'  # each layer's Kronecker direction, at the length of AdamW's update
kl_clip = None  # grafting sets the step length; the KL clip would shrink almost every step
momentum = 0.9
factor_decay = 0.95
factor_update_freq = 10
inv_update_freq = 10
eigen_refresh = 'none'

learning_rate = 1e-3  # AdamW's lr: grafting gives each layer AdamW's step length
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99  # the AdamW part and the grafting norm
warmup_iters = 100

device = 'cpu'
compile = False
