# fixed_fisher_small with delta-rule fast-weight attention (linear_attention.py): the Kronecker optimizers
# precondition the fast-weight projections (c_attn, c_beta, c_proj) like any nn.Linear.

out_dir = 'out-delta-fixed-fisher-small'
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
