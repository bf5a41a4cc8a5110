# GPT-2 (124M) on OpenWebText as config/train_gpt2.py, trained with Fixed Fisher instead of AdamW. The Kronecker
# hyperparameters are the ones tuned on the small model (config/fixed_fisher_small.py, study.py --tune); they are
# not retuned at this scale, so check the learning rate and damping with a short study.py --tune run first.
# $ torchrun --standalone --nproc_per_node=8 train.py config/fixed_fisher_gpt2.py

out_dir = 'out-fixed-fisher-gpt2'
wandb_log = True
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M-fixed-fisher'

dataset = 'openwebtext'
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8  # 491,520 tokens per iteration, as AdamW's run

optimizer = 'fixed_fisher'
learning_rate = 6e-4
max_iters = 600000
lr_decay_iters = 600000
weight_decay = 1e-1
damping = 1e-3
momentum = 0.9
factor_decay = 0.95
factor_update_freq = 10
inv_update_freq = 10
max_factor_dim = 4096  # every block matrix of GPT-2 (124M) is preconditioned (the widest factor is 3072); the
# 50,304 x 768 tied embedding and head stay with AdamW

eval_interval = 1000
eval_iters = 200
log_interval = 10

compile = True
