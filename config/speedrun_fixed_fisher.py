# The GPT-2 (124M) speedrun benchmark (see config/speedrun_adamw.py) with Fixed Fisher on the blocks' matrices and
# AdamW on the tied embedding/head, norms and biases. The Kronecker hyperparameters are the small model's
# (config/fixed_fisher_small.py); max_iters is a first guess between Muon's and AdamW's step counts: after a
# first run, set max_iters and lr_decay_iters near the step where val loss reaches 3.28 and run again.
# $ torchrun --standalone --nproc_per_node=8 train.py config/speedrun_fixed_fisher.py

out_dir = 'out-speedrun-fixed-fisher'
eval_interval = 125
eval_iters = 640  # 10,485,760 val tokens
log_interval = 10
always_save_checkpoint = False
wandb_project = 'speedrun'
wandb_run_name = 'fixed_fisher'

dataset = 'fineweb10B'
batch_size = 16
block_size = 1024
gradient_accumulation_steps = 32  # 524,288 tokens per step

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

optimizer = 'fixed_fisher'
learning_rate = 1.8e-3
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
damping = 1e-3
momentum = 0.9
factor_decay = 0.95
factor_update_freq = 10
inv_update_freq = 10
max_factor_dim = 4096  # every block matrix (widest factor 3072); the tied 50,304-row embedding stays with AdamW
max_iters = 4500
lr_decay_iters = 4500
warmup_iters = 250
min_lr = 1.8e-4

compile = True
target_val_loss = 3.28  # the benchmark counts steps to this val loss
