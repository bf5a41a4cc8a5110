# adamw_small's model, data and schedule, trained with SOAP (optim/soap.py, pytorch-optimizer's): Adam in the
# eigenbasis of Shampoo's factors, the eigenbasis refreshed every inv_update_freq steps.

out_dir = 'out-soap-small'
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

optimizer = 'soap'
inv_update_freq = 10  # SOAP's precondition_frequency
learning_rate = 3e-3  # the package's default; tune with python study.py config/studies/compare_small.py
max_iters = 2000
lr_decay_iters = 2000
min_lr = 3e-4
beta2 = 0.99  # the number of tokens per iteration is small
warmup_iters = 100

device = 'cpu'
compile = False
