# The GPT-2 (124M) speedrun benchmark (modded-nanogpt's): a GPT-2-124M-sized model on FineWeb, 524,288 tokens per
# step, and the number of steps to a val loss of 3.28 on 10,485,760 val tokens. For reference: tuned AdamW takes
# ~5,600 steps, Muon 3,250, the best entry 2,690. Prepare the data (python data/fineweb10B/prepare.py), then:
# $ torchrun --standalone --nproc_per_node=8 train.py config/speedrun_adamw.py
# or, to get the steps to 3.28 in a table: python study.py config/speedrun_adamw.py --optimizers=adamw \
#   --target_loss=3.28 --nproc=8 --out_dir=out-speedrun
# config/speedrun_muon.py and config/speedrun_fixed_fisher.py change only the optimizer and its schedule.

out_dir = 'out-speedrun-adamw'
eval_interval = 125  # the resolution of the step count
eval_iters = 640  # 640 x 16 x 1024 = 10,485,760 val tokens per evaluation, as the benchmark's
log_interval = 10
always_save_checkpoint = False
wandb_project = 'speedrun'
wandb_run_name = 'adamw'

dataset = 'fineweb10B'
batch_size = 16
block_size = 1024
gradient_accumulation_steps = 32  # 16 x 1024 x 32 = 524,288 tokens per step (4 micro-steps per GPU on 8)

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

optimizer = 'adamw'
learning_rate = 1.8e-3  # modded-nanogpt's AdamW baseline (3x nanoGPT's 6e-4); retune with study.py --tune lr=...
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
max_iters = 6000  # a margin over the ~5,600 steps the reference needs
lr_decay_iters = 6000
warmup_iters = 250
min_lr = 1.8e-4

compile = True
target_val_loss = 3.28  # the benchmark counts steps to this val loss
