# adamw_small's model, data and schedule, trained with DyKAF (optim/dykaf.py): SOAP's Adam in a Kronecker
# eigenbasis, the factors kept as the Kronecker product nearest to the running empirical Fisher.
# Untuned: kfac_small's grafting to AdamW's step and its learning rate (DyKAF has no damping); a later
# study tunes every optimizer on its grid.

out_dir = 'out-dykaf-small'
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

optimizer = 'dykaf'
grafting = 'adam'  # each layer's DyKAF direction, at the length of AdamW's update, as the Kronecker configs
kl_clip = None
factor_decay = 0.95  # SOAP's shampoo_beta
factor_update_freq = 1  # the factors on every step, as SOAP and the paper (train.py's default is 10)
inv_update_freq = 10  # basis refreshes (power iteration + QR): SOAP's precondition_frequency

learning_rate = 1e-3  # untuned: KFAC's config's (AdamW's lr: grafting gives each layer AdamW's step length)
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
beta2 = 0.99  # DyKAF's second moment, the AdamW part and the grafting norm
warmup_iters = 100

device = 'cpu'
compile = False
