# adamw_small's model, data and schedule, trained with EVA (optim/eva.py): a rank-one Kronecker Fisher from the
# mean activation and output gradient, inverted by Sherman-Morrison.
# Tuned on shakespeare_char (500-iteration runs, val loss; AdamW's best there is 2.128 at lr 6e-3):
#   relative damping 1e-2 + grafting: 2.341 (this config);  absolute damping 1e-2 + KL clip 1e-3: 2.386

out_dir = 'out-eva-small'
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

optimizer = 'eva'
damping_mode = 'relative'  # lambda times the mean eigenvalue of the rank-one Fisher
damping = 1e-2
grafting = 'adam'  # each layer's direction, at the length of AdamW's update
kl_clip = None
momentum = 0.9
factor_decay = 0.95
factor_update_freq = 10

learning_rate = 1e-3  # AdamW's lr: grafting gives each layer AdamW's step length
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99  # the AdamW part and the grafting norm
warmup_iters = 100

device = 'cpu'
compile = False
