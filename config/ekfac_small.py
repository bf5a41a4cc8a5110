# adamw_small's model, data and schedule, trained with EKFAC (optim/ekfac.py): Fixed Fisher's Kronecker
# eigenbasis, with the per-token gradients' second moments in it as the eigenvalues.
# Untuned: kfac_small's settings (relative damping 1e-1, grafting to AdamW's step, its learning rate);
# a later study tunes every optimizer on its grid.

out_dir = 'out-ekfac-small'
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

optimizer = 'ekfac'
damping_mode = 'relative'  # lambda times the mean second moment in the eigenbasis
damping = 1e-1
grafting = 'adam'  # each layer's Kronecker direction, at the length of AdamW's update
kl_clip = None  # grafting sets the step length; the KL clip would shrink almost every step
momentum = 0.9
factor_decay = 0.95
factor_update_freq = 10
inv_update_freq = 10
eigen_refresh = 'none'

learning_rate = 1e-3  # untuned: KFAC's config's (AdamW's lr: grafting gives each layer AdamW's step length)
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99  # the AdamW part and the grafting norm
warmup_iters = 100

device = 'cpu'
compile = False
