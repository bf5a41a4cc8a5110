# adamw_small's model, data and schedule, trained with Muon (optim/muon.py): torch.optim.Muon on the blocks'
# 2-D weights (Newton-Schulz in float32 on CPUs), AdamW on the rest, one learning rate for both.

out_dir = 'out-muon-small'
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

optimizer = 'muon'
momentum = 0.95  # Muon's Nesterov momentum (train.py's default 0.9 is the Kronecker methods')
learning_rate = 3e-3  # match_rms_adamw: AdamW's scale; tune with python study.py config/studies/compare_small.py
max_iters = 2000
lr_decay_iters = 2000
min_lr = 3e-4
beta2 = 0.99  # the number of tokens per iteration is small
warmup_iters = 100

device = 'cpu'
compile = False
