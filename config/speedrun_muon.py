# The GPT-2 (124M) speedrun benchmark (see config/speedrun_adamw.py) with Muon on the blocks' matrices and AdamW on
# the tied embedding/head, norms and biases (optim/muon.py). The reference Muon entry reaches 3.28 in ~3,250 steps.
# $ torchrun --standalone --nproc_per_node=8 train.py config/speedrun_muon.py

out_dir = 'out-speedrun-muon'
eval_interval = 125
eval_iters = 640  # 10,485,760 val tokens
log_interval = 10
always_save_checkpoint = False
wandb_project = 'speedrun'
wandb_run_name = 'muon'

dataset = 'fineweb10B'
batch_size = 16
block_size = 1024
gradient_accumulation_steps = 32  # 524,288 tokens per step

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

optimizer = 'muon'
# modded-nanogpt's: 0.0036 for the head's AdamW, and Muon's update 0.02/sqrt(768) per entry on a 768 x 768 matrix,
# which is what optim/muon.py's RMS matching (0.2 lr per entry) gives at the same 3.6e-3
learning_rate = 3.6e-3
momentum = 0.95  # Muon's Nesterov momentum
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.0
max_iters = 3500  # a margin over the ~3,250 steps the reference needs
lr_decay_iters = 3500
warmup_iters = 0  # modded-nanogpt's Muon runs start at full learning rate
min_lr = 3.6e-4

compile = True
target_val_loss = 3.28  # the benchmark counts steps to this val loss
