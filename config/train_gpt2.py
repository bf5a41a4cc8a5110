# GPT-2 (124M) on OpenWebText, as nanoGPT's config/train_gpt2.py: down to a val loss of ~2.85 on one node of
# 8 A100 40GB in ~5 days. Prepare the data (python data/openwebtext/prepare.py), then launch:
# $ torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py

out_dir = 'out-gpt2'
wandb_log = True
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M'

dataset = 'openwebtext'
# 12 batch size * 1024 block size * 5 gradaccum * 8 GPUs = 491,520 tokens per iteration (~0.5M)
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

# 600,000 iterations of ~0.5M tokens: ~300B tokens in all
optimizer = 'adamw'
learning_rate = 6e-4
max_iters = 600000
lr_decay_iters = 600000
weight_decay = 1e-1

eval_interval = 1000
eval_iters = 200
log_interval = 10

compile = True
