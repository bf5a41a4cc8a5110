# nanoGPT's "baby GPT" on tiny Shakespeare, by character. On a GPU it reaches val loss ~1.47 in a few minutes.
# On a CPU, nanoGPT's smaller settings: --device=cpu --compile=False --eval_iters=20 --log_interval=1
# --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
# --dropout=0.0 (README.md gives the result)

out_dir = 'out-shakespeare-char'
eval_interval = 250  # evaluate often: the model overfits quickly
eval_iters = 200
log_interval = 10  # don't print too often

always_save_checkpoint = False  # keep only the best val loss: this small set overfits

wandb_log = False
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

# baby GPT
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3  # with baby networks a bit higher is fine
max_iters = 5000
lr_decay_iters = 5000  # usually = max_iters
min_lr = 1e-4  # learning_rate / 10
beta2 = 0.99  # bigger because the number of tokens per iteration is small

warmup_iters = 100  # not super necessary
