"""
Trains a GPT with AdamW or a Fisher-preconditioned optimizer. One process on a CPU or a GPU:
$ python train.py config/adamw_small.py --batch_size=32

Several ranks with DDP (gradient_accumulation_steps counts micro-steps over all ranks, so it must be a multiple of
their number; here the same global batch of 12 sequences as one process, on 2 CPU processes or GPUs):
$ torchrun --standalone --nproc_per_node=2 train.py config/fixed_fisher_small.py --batch_size=6 --gradient_accumulation_steps=2

Several nodes: see README.md. Each logged step and each evaluation is one JSON line in out_dir/metrics.jsonl.
`python train.py --help` lists every config key with its default.
"""

import atexit
import json
import math
import os
import resource
import runpy
import socket
import sys
import time
from contextlib import nullcontext
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import git_state, load_checkpoint, machine_name, save_checkpoint
from data.common import load_meta
from model import GPT, GPTConfig
from optim import build_optimizer, optimizer_kwargs
from optim.distributed import leave_process_group

here = os.path.dirname(os.path.abspath(__file__))
# -----------------------------------------------------------------------------
# default config values, for a GPT-2 (124M) on OpenWebText as in nanoGPT
# I/O
out_dir = 'out'
eval_interval = 2000  # iterations between evaluations (and checkpoints)
log_interval = 1  # iterations between train records
eval_iters = 200  # batches per split in an evaluation
eval_only = False  # if True, evaluate once and exit
always_save_checkpoint = True  # if False, save only when val loss improves (a diverged model is never saved)
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
overwrite = False  # with init_from='scratch': replace the checkpoint and logs already in out_dir (else an error)
divergence_nats = 1.0  # diverged: an iteration's loss above ln(vocab_size) + this, or a val loss above the best + this
max_skipped_steps = 10  # diverged: this many steps in a row skipped by the optimizer's NaN guard
# wandb logging
wandb_log = False
wandb_project = 'nanofisher'
wandb_run_name = 'run'
# data
dataset = 'openwebtext'  # folder under data/ with train.bin, val.bin (and meta.json for character sets)
data_dir = ''  # '' means data/<dataset> beside train.py
allow_pickle_meta = False  # read an old meta.pkl (unpickling can run code; prepare writes meta.json)
data_seed = 1337  # seeds the batch order: same data_seed, same batches, whatever the optimizer or number of ranks
gradient_accumulation_steps = 5 * 8  # micro-steps per iteration, over all ranks
batch_size = 12  # sequences per micro-step
block_size = 1024
# model
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0  # 0 for pretraining, 0.1+ for finetuning
bias = False  # bias in Linears and LayerNorms
attention = 'softmax'  # 'softmax' (linear_attention.py adds 'linear' and 'delta')
feature_map = 'dpfp'  # 'linear' and 'delta': 'dpfp' or 'elu' (elu+1) features of queries and keys
dpfp_nu = 1  # DPFP's nu (feature dimension 2 nu d_head)
chunk_size = 64  # tokens per chunk of the chunked linear and delta rules
# optimizer (optim/): shared names, so that `--damping=1e-2` reaches every optimizer that has a damping
optimizer = 'adamw'  # a key of optim.OPTIMIZERS: 'adamw', 'kfac', 'eva', 'fixed_fisher', ...
learning_rate = 6e-4  # peak learning rate, passed to the optimizer as lr
max_iters = 600000  # total iterations
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients at this norm, None disables
# Kronecker-factored optimizers (ignored by adamw)
damping = 1e-3  # λ of the damped inverse
damping_mode = 'absolute'  # 'absolute' or 'relative' (λ times the layer's mean eigenvalue of A⊗G)
damping_schedule = 'constant'  # 'constant' or 'lm' (Levenberg–Marquardt: λ adapted to the reduction ratio)
damping_update_freq = 5  # 'lm': iterations between λ updates (T1 of Martens & Grosse, 2015)
momentum = 0.9  # heavy-ball momentum of the preconditioned update
factor_decay = 0.95  # EMA of the factors: F ← decay·F + (1 − decay)·F_new
factor_update_freq = 10  # iterations between factor updates (hooks are off on the others)
inv_update_freq = 10  # iterations between inverse / eigendecomposition refreshes
kl_clip = None  # KL clip κ of the update, None disables
fisher = 'empirical'  # 'empirical' (training labels) or 'sampled' (labels drawn from the model: the true Fisher)
exclude = ''  # comma-separated module names left to AdamW
max_factor_dim = 4096  # layers with a wider factor are left to AdamW
kfac_approx = 'expand'  # Kronecker factors: 'expand' (every token a sample) or 'reduce' (every sequence one)
step_rule = 'lr'  # 'lr' or 'quadratic' (step size and momentum from the quadratic model; lr only caps the size)
adamw_lr_scale = 1.0  # Kronecker optimizers: the lr of their AdamW part (embeddings, norms) relative to learning_rate
step_rule_freq = 1  # 'quadratic': iterations between solves of α, μ (reused in between)
eigen_refresh = 'none'  # eigenbasis methods: 'none' or 'qr' (one power iteration + QR between eigendecompositions)
grafting = 'none'  # 'none' or 'adam': each layer's update rescaled to the norm of AdamW's
cross_terms = 0.0  # fixed_fisher: γ in [0, 1], the share of KFAC's cross terms put back (0: Fixed Fisher, 1: KFAC)
solve = None  # None: the method's own; kfac: 'inverse' (its default) | 'eigen' (the eigenbasis solve at γ = 1);
# fixed_fisher: 'eigen' (its default) | 'kfac_cg' (CG on (A⊗G + λI) u = v from KFAC's answer, no eigh)
cg_steps = 2  # fixed_fisher with solve='kfac_cg': CG steps (0 is KFAC)
muon_lr_scale = 1.0  # muon: Muon's learning rate relative to learning_rate (its AdamW part's)
# learning rate schedule: linear warmup, cosine decay to min_lr
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000  # ~= max_iters per Chinchilla
min_lr = 6e-5  # ~= learning_rate/10 per Chinchilla
target_val_loss = None  # stop at the first evaluation at or below this val loss (None: off): steps-to-target runs
# DDP
backend = ''  # '' picks nccl on GPUs and gloo on CPUs
ddp_timeout_s = 300  # seconds a rank waits for the others in a collective before the run stops, naming the late ranks
distribute = 'decomposition'  # Kronecker optimizers' work over ranks: 'decomposition', 'gradient', 'none'
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:0', 'mps'
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'  # or 'float16'
compile = False  # torch.compile the model (PyTorch 2); worth it on GPUs
seed = 1337  # seeds the model's initialisation and dropout
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_') and (v is None or type(v) in (int, float, bool, str))]
config_keys.remove('here')
config_defaults = {k: globals()[k] for k in config_keys}  # before any override: what older checkpoints ran with


def config_error(message):
    """A bad config stops every rank; the message is printed once (rank 0), alone, as the last line of train.py's
    output, and under torchrun also handed to its failure report as the root cause."""
    if os.environ.get('RANK', '0') == '0':
        if os.environ.get('TORCHELASTIC_ERROR_FILE'):
            with open(os.environ['TORCHELASTIC_ERROR_FILE'], 'w') as f:
                json.dump({'message': f"train.py: config error: {message}", 'timestamp': int(time.time())}, f)
        print(f"train.py: config error: {message}", file=sys.stderr)
    sys.exit(2)


try:
    exec(open(os.path.join(here, 'configurator.py')).read())  # overrides from the command line or a config file
except (ValueError, TypeError, FileNotFoundError) as e:
    config_error(e)
config = {k: globals()[k] for k in config_keys}  # logged, and saved in checkpoints
# -----------------------------------------------------------------------------

for key in config_keys:  # None is "off" for the float keys that say so; the others need their number
    if globals()[key] is None and type(config_defaults[key]) is float and key != 'grad_clip':
        config_error(f"bad config value {key}=None (only grad_clip takes None among the number keys)")
for key, ok in [('init_from', init_from in ('scratch', 'resume')), ('dtype', dtype in ('float32', 'bfloat16', 'float16')),
                ('max_iters', max_iters >= 0), ('eval_interval', eval_interval > 0), ('log_interval', log_interval > 0),
                ('eval_iters', eval_iters > 0), ('gradient_accumulation_steps', gradient_accumulation_steps > 0),
                ('batch_size', batch_size > 0), ('block_size', block_size > 0), ('warmup_iters', warmup_iters >= 0),
                ('lr_decay_iters', not decay_lr or lr_decay_iters >= warmup_iters),
                ('divergence_nats', divergence_nats > 0), ('max_skipped_steps', max_skipped_steps > 0),
                ('ddp_timeout_s', ddp_timeout_s > 0), ('grad_clip', grad_clip is None or grad_clip > 0),
                ('grad_clip', step_rule != 'quadratic' or grad_clip is None)]:
    if not ok:
        hint = {'lr_decay_iters': f" (must be >= warmup_iters={warmup_iters})",
                'grad_clip': " (must be > 0; None turns clipping off)" if step_rule != 'quadratic' else
                " (step_rule='quadratic' needs None: its model predicts the change of the unclipped gradient's step)"
                }.get(key, '')
        config_error(f"bad config value {key}={globals()[key]!r}{hint}")

# DDP: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    ddp_rank = int(os.environ['RANK'])
    ddp_local_rank = int(os.environ['LOCAL_RANK'])
    ddp_world_size = int(os.environ['WORLD_SIZE'])
    if gradient_accumulation_steps % ddp_world_size != 0:
        config_error(f"gradient_accumulation_steps={gradient_accumulation_steps} is not a multiple of the "
                     f"{ddp_world_size} ranks (it counts micro-steps over all ranks: e.g. "
                     f"--gradient_accumulation_steps={ddp_world_size * max(1, gradient_accumulation_steps // ddp_world_size)})")
    use_cuda = device.startswith('cuda')
    dist.init_process_group(backend=backend or ('nccl' if use_cuda else 'gloo'), timeout=timedelta(seconds=ddp_timeout_s))
    if use_cuda:
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
    master_process = ddp_rank == 0  # logs, evaluates and writes checkpoints
    gradient_accumulation_steps //= ddp_world_size

    def report_stalled_ranks(kind, error, tb):
        """A collective that timed out: every rank that is still alive checks in at torchrun's key-value store (it
        outlives the broken process group), and the ranks that do not are named, as the last line."""
        text = str(error).lower()
        if isinstance(error, RuntimeError) and ('timed out' in text or 'timeout' in text) and \
                any(word in text for word in ('gloo', 'nccl', 'pair closure', 'collective', 'watchdog')):
            sys.__excepthook__(kind, error, tb)  # which collective, first
            prefix = (f"nanofisher/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/"
                      f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/alive/")
            try:
                store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), is_master=False,
                                      timeout=timedelta(seconds=10))
                store.set(prefix + str(ddp_rank), '1')
                deadline = time.time() + min(10, ddp_timeout_s)
                late = list(range(ddp_world_size))
                while late and time.time() < deadline:
                    late = [r for r in late if not store.check([prefix + str(r)])]
                    time.sleep(0.2)
                late = f"rank(s) {', '.join(map(str, late))} did not answer" if late else "every rank answers now"
            except (RuntimeError, KeyError, ValueError) as e:
                late = f"the ranks could not be asked ({e})"
            print(f"rank {ddp_rank}: a collective timed out after ddp_timeout_s={ddp_timeout_s}; {late} "
                  f"(stalled, killed or out of memory: see that rank's output)", file=sys.stderr)
            os._exit(1)
        sys.__excepthook__(kind, error, tb)
    sys.excepthook = report_stalled_ranks
else:
    master_process, ddp_rank, ddp_world_size = True, 0, 1
tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
if master_process:
    print(f"tokens per iteration: {tokens_per_iter:,} ({gradient_accumulation_steps} micro-steps x "
          f"{ddp_world_size} ranks x {batch_size} sequences x {block_size} tokens)")
    os.makedirs(out_dir, exist_ok=True)


def take_lock(path):
    """out_dir/train.lock holds the host and pid of the run writing out_dir: a second run is refused, and the lock
    of a process that died is taken over (a lock from another host is refused: its process cannot be checked). The
    lock appears whole (written to a temporary file, then hard-linked to its name, which fails if it exists)."""
    mine = json.dumps({'host': socket.gethostname(), 'pid': os.getpid()})
    tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"
    with open(tmp, 'w') as f:
        f.write(mine)
    try:
        for _ in range(5):
            try:
                os.link(tmp, path)
            except FileExistsError:
                try:
                    with open(path) as f:
                        owner = json.load(f)
                    host, pid = owner['host'], int(owner['pid'])
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                except (OSError, ValueError, KeyError, TypeError):
                    host, pid = socket.gethostname(), -1  # unreadable: not written by take_lock
                alive = host != socket.gethostname()
                if not alive and 0 < pid != os.getpid():  # our own pid in a lock we have not taken: a past boot's
                    try:
                        os.kill(pid, 0)
                        alive = True
                    except ProcessLookupError:
                        pass
                    except PermissionError:
                        alive = True
                if alive:
                    config_error(f"out_dir {out_dir!r} is in use by process {pid} on {host} ({path}); wait for it, "
                                 f"or use another --out_dir (delete the lock only if that process is gone)")
                print(f"taking over {path} from process {pid}, which is gone")
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass  # another run took it over first: the next link tells
                continue
            atexit.register(lambda: os.path.exists(path) and open(path).read() == mine and os.remove(path))
            return
        config_error(f"could not take the lock {path}: other runs keep taking it; is another train.py starting in "
                     f"out_dir {out_dir!r}?")
    finally:
        os.remove(tmp)


ckpt_path = os.path.join(out_dir, 'ckpt.pt')
if master_process:
    take_lock(os.path.join(out_dir, 'train.lock'))
    if init_from == 'scratch' and os.path.exists(ckpt_path):
        if not overwrite:
            config_error(f"out_dir {out_dir!r} already holds a checkpoint ({ckpt_path}); continue it with "
                         f"--init_from=resume, replace it with --overwrite=True, or pick another --out_dir")
        print(f"--overwrite=True: removing {ckpt_path} of the previous run")  # so nothing resumes or reports it
        os.remove(ckpt_path)

torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
device_type = 'cuda' if 'cuda' in device else 'cpu'  # for autocast
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type=device_type, dtype=ptdtype)

# data: train.bin and val.bin hold uint16 token ids; shakespeare_char, the default small set, is prepared on first use
data_dir = data_dir or os.path.join(here, 'data', dataset)
prepare_script = os.path.join(here, 'data', dataset, 'prepare.py')
if not os.path.exists(os.path.join(data_dir, 'train.bin')) and dataset == 'shakespeare_char':
    if master_process:
        print(f"preparing {dataset} into {data_dir} (first use)")
        runpy.run_path(prepare_script)['prepare'](out_dir=data_dir)
    if ddp:
        dist.barrier()
meta = load_meta(data_dir, allow_pickle_meta)  # a character set's vocabulary; None for GPT-2 BPE
vocab_size = meta['vocab_size'] if meta else 50304  # GPT-2 BPE (50257) padded up to a multiple of 64


def open_tokens(split):
    """The split's tokens as a read-only memmap; a missing, empty or damaged file is an error saying how to fix it."""
    path = os.path.join(data_dir, f'{split}.bin')
    fix = f"prepare it with: python {prepare_script}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found; {fix}")
    size = os.path.getsize(path)
    if size == 0 or size % 2 != 0:
        raise ValueError(f"{path} is {'empty' if size == 0 else 'truncated (odd byte count)'}; {fix}")
    if size // 2 <= block_size:
        raise ValueError(f"{path} holds {size // 2} tokens, not more than block_size={block_size}; {fix}")
    return np.memmap(path, dtype=np.uint16, mode='r')


split_tokens = {split: open_tokens(split) for split in ('train', 'val')}


def get_batch(split, *key):
    """Sequences drawn from a generator seeded by (data_seed, split, *key) only: the global batch of an iteration is
    the same for any number of ranks, for every optimizer, and after a resume."""
    data = split_tokens[split]
    seed = np.random.SeedSequence([data_seed, split == 'val', *key]).generate_state(1)[0]
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=torch.Generator().manual_seed(int(seed)))
    x = torch.from_numpy(np.stack([data[i:i + block_size] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64))
    if x.max() >= vocab_size or y.max() >= vocab_size:
        bad = int(max(x.max(), y.max()))
        raise ValueError(f"{split}.bin in {data_dir} holds token id {bad} >= vocab_size {vocab_size}: the file is "
                         f"corrupt or belongs to another tokenizer; prepare it with: python {prepare_script}")
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# model
iter_num = 0
best_val_loss = 1e9
train_time_s = 0.0  # seconds spent in training steps, evaluation and checkpointing left out
model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                  vocab_size=vocab_size, dropout=dropout, attention=attention, feature_map=feature_map,
                  dpfp_nu=dpfp_nu, chunk_size=chunk_size)
# what a resume may change: the length and learning-rate schedule of the run, evaluation, logging, checkpointing and
# the machine; every other key (model, optimizer and its knobs, data, batch, seeds) defines the run and must match
RESUMABLE = {'max_iters', 'learning_rate', 'decay_lr', 'warmup_iters', 'lr_decay_iters', 'min_lr', 'target_val_loss',
             'eval_interval', 'log_interval', 'eval_iters', 'eval_only', 'always_save_checkpoint', 'init_from',
             'overwrite', 'divergence_nats', 'max_skipped_steps', 'out_dir', 'data_dir', 'allow_pickle_meta',
             'wandb_log', 'wandb_project', 'wandb_run_name', 'device', 'dtype', 'compile', 'backend', 'distribute',
             'ddp_timeout_s', 'dropout'}
checkpoint = None
if init_from == 'resume':
    checkpoint = load_checkpoint(ckpt_path, map_location=device)
    saved = {**config_defaults, **checkpoint['config']}  # a key an older checkpoint lacks ran at its default
    differ = [f"{k}: checkpoint {saved[k]!r}, now {config[k]!r}" for k in config_keys
              if k not in RESUMABLE and saved[k] != config[k]]
    if differ:
        config_error(f"--init_from=resume: {ckpt_path} was trained with another run's config, which a resume "
                     f"does not change (README, Checkpoints and resume): " + '; '.join(differ))
    if master_process:
        print(f"resuming from {ckpt_path} at iteration {checkpoint['iter_num']}")
    for k in ['n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'attention', 'feature_map', 'dpfp_nu',
              'chunk_size']:
        model_args[k] = checkpoint['model_args'].get(k, model_args[k])  # older checkpoints lack the last three
torch.manual_seed(seed)  # the same initial weights on every rank
model = GPT(GPTConfig(**model_args))
if checkpoint is not None:
    model.load_state_dict(checkpoint['model'])
    iter_num = checkpoint['iter_num']
    best_val_loss = checkpoint['best_val_loss']
    train_time_s = checkpoint.get('train_time_s', 0.0)
model.to(device)
if master_process:
    print(f"number of parameters: {model.get_num_params() / 1e6:.2f}M")

# the optimizer gets every config global named like one of its arguments (learning_rate is its lr)
optimizer = build_optimizer(optimizer, model, **optimizer_kwargs(optimizer, {**config, 'lr': learning_rate}))
if hasattr(optimizer, 'distribute'):
    optimizer.distribute = distribute  # how a Kronecker optimizer spreads its decompositions over DDP's ranks
if checkpoint is not None:
    optimizer.load_state_dict(checkpoint['optimizer'])
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))

# RNG (dropout, sampled-Fisher labels): rank r uses seed + r, restored on resume with the same number of ranks
torch.manual_seed(seed + ddp_rank)
if checkpoint is not None:
    rng_states = checkpoint.get('rng_states') or []
    if len(rng_states) == ddp_world_size:
        torch.set_rng_state(rng_states[ddp_rank]['torch'])
        if device_type == 'cuda' and rng_states[ddp_rank]['cuda'] is not None:
            torch.cuda.set_rng_state(rng_states[ddp_rank]['cuda'])
    elif master_process:
        print(f"checkpoint has RNG states of {len(rng_states)} ranks, this run has {ddp_world_size}: reseeding "
              f"(data order is unaffected; dropout and sampled labels differ from an uninterrupted run)")
checkpoint = None  # free memory

raw_model = model  # the module that owns the weights: checkpoints, generation, the optimizer's hooks
if compile:
    print("compiling the model... (takes a minute)")
    model = torch.compile(model)
eval_model = model
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)


@torch.no_grad()
def estimate_loss():
    """Mean loss over the same eval_iters batches of each split at every evaluation, spread over the ranks, and its
    standard error over the batches, sd / sqrt(eval_iters): how much of a difference between runs is evaluation
    noise."""
    out = {}
    eval_model.eval()
    for split in ['train', 'val']:
        # (sum of losses, of their squares, count); MPS has no float64
        total = torch.zeros(3, device=device, dtype=torch.float32 if device.startswith('mps') else torch.float64)
        for k in range(ddp_rank, eval_iters, ddp_world_size):
            X, Y = get_batch(split, 1, k)
            with ctx:
                _, loss = eval_model(X, Y)
            loss = loss.to(total.dtype)
            total += torch.stack([loss, loss * loss, torch.ones_like(loss)])
        if ddp:
            dist.all_reduce(total)
        mean, n = total[0] / total[2], total[2]
        out[split] = mean.item()
        out[f'{split}_se'] = ((total[1] / n - mean * mean).clamp_min(0) / (n - 1).clamp_min(1)).sqrt().item()
    eval_model.train()
    return out


def get_lr(it):
    """Linear warmup for warmup_iters, cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:  # also when warmup_iters == lr_decay_iters: no decay phase
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


metrics_path = os.path.join(out_dir, 'metrics.jsonl')


def keep_metrics_until(path, last_iter):
    """On resume: the log keeps the records up to the checkpoint's iteration (those after it are logged again by this
    run) and drops a torn last line (the previous run was killed while writing it)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get('iter', 0) <= last_iter and record.get('kind') != 'diverged':
            kept.append(json.dumps(record) + '\n')
    if len(kept) < len(lines):
        print(f"{path}: dropping {len(lines) - len(kept)} records after iteration {last_iter} or torn")
        with open(path + '.tmp', 'w') as f:
            f.writelines(kept)
        os.replace(path + '.tmp', path)


if master_process:
    if init_from == 'scratch':
        open(metrics_path, 'w').close()
    elif not eval_only:  # an eval_only look at a checkpoint appends its evaluation and changes nothing else
        keep_metrics_until(metrics_path, iter_num)
    if not (eval_only and init_from == 'resume'):
        with open(os.path.join(out_dir, 'config.json'), 'w') as f:
            json.dump({**config, **git_state(), 'machine': machine_name()}, f, indent=1)  # and where it ran
    if wandb_log:
        import wandb
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)


def log_metrics(record):
    with open(metrics_path, 'a') as f:
        f.write(json.dumps(record) + '\n')
    if wandb_log:
        wandb.log(record, step=record['iter'])


def stop_diverged(reason):
    """A diverged run stops here: logged, said as the last line, exit status 3; the last checkpoint stays as it was."""
    if master_process:
        log_metrics(dict(iter=iter_num, kind='diverged', reason=reason))
        kept = f"{ckpt_path} is left as it was" if os.path.exists(ckpt_path) else \
            "no checkpoint was written"
        print(f"training diverged: {reason} ({kept}; try a smaller learning_rate or a larger damping)",
              file=sys.stderr)
    if ddp:
        leave_process_group()
    sys.exit(3)


def save(val_loss):
    rng = {'torch': torch.get_rng_state(), 'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None}
    rng_states = [None] * ddp_world_size
    if ddp:
        dist.all_gather_object(rng_states, rng)
        if hasattr(optimizer, 'consolidate_state_dict'):
            optimizer.consolidate_state_dict()  # on every rank: rank 0 gathers what the others own ('gradient')
    else:
        rng_states = [rng]
    if master_process:
        checkpoint = dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), model_args=model_args,
                          iter_num=iter_num, best_val_loss=best_val_loss, config=config, val_loss=val_loss,
                          rng_states=rng_states, data_seed=data_seed, train_time_s=train_time_s)
        print(f"saving checkpoint to {out_dir}")
        save_checkpoint(checkpoint, ckpt_path)


# training loop: iterations iter_num .. max_iters-1, with an evaluation every eval_interval and at the end
start_iter = iter_num
loss_ceiling = math.log(vocab_size) + divergence_nats  # above it a model predicts worse than uniform guessing
iter_losses = []  # each iteration's mean loss on this rank since the last check
skipped_in_a_row, skipped_before = 0, getattr(optimizer, 'skipped_steps', 0)
last_val, saved_iter = None, None
backward = getattr(optimizer, 'backward', None)  # Kronecker optimizers capture factors in their backward
loss_sum = torch.zeros((), device=device)  # sum of micro-batch losses since the last log
t_log, iters_since_log = time.time(), 0
phase_s = {'fwd_bwd': 0.0, 'step': 0.0}  # seconds since the last log in forward+backward and in clip+step


def clock():
    if device_type == 'cuda':
        torch.cuda.synchronize()  # GPU work is asynchronous: wait for it so that each phase gets its own time
    return time.time()


while True:
    is_last = iter_num >= max_iters
    resumed_here = init_from == 'resume' and iter_num == start_iter  # this iteration's evaluation is in the log
    if eval_only or ((iter_num % eval_interval == 0 or is_last) and not resumed_here):
        t_eval = time.time()
        losses = estimate_loss()
        if master_process:
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            log_metrics(dict(iter=iter_num, kind='eval', train_loss=losses['train'], val_loss=losses['val'],
                             val_loss_se=losses['val_se'], train_loss_se=losses['train_se'], time_s=train_time_s))
        last_val = losses['val']
        if not eval_only:
            # a checkpoint only of a healthy model: finite weights, and a val loss finite and within
            # divergence_nats of the best so far; otherwise the run stops and the last checkpoint stays
            if not math.isfinite(last_val) or last_val > best_val_loss + divergence_nats:
                stop_diverged(f"val loss {last_val:.4g} at iteration {iter_num}, best so far {best_val_loss:.4g}")
            if not bool(torch.stack([p.isfinite().all() for p in raw_model.parameters()]).all()):
                stop_diverged(f"non-finite weights at iteration {iter_num}")
            improved = last_val < best_val_loss
            best_val_loss = min(best_val_loss, last_val)
            if (improved or always_save_checkpoint) and iter_num > 0:
                save(last_val)
                saved_iter = iter_num
        if target_val_loss is not None and losses['val'] <= target_val_loss and not eval_only:
            if master_process:
                print(f"step {iter_num}: val loss {losses['val']:.4f} reached target_val_loss {target_val_loss}; stopping")
            is_last = True
        t_log += time.time() - t_eval  # evaluation and checkpointing are not training time
    if is_last or eval_only:
        break

    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr * param_group.get('lr_scale', 1.0)
    t0 = clock()
    iter_loss = torch.zeros((), device=device)
    for micro_step in range(gradient_accumulation_steps):
        if ddp:
            # all-reduce the gradients only on the last micro-step
            model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        X, Y = get_batch('train', 0, iter_num, ddp_rank * gradient_accumulation_steps + micro_step)
        with ctx:
            logits, loss = model(X, Y)
        iter_loss += loss.detach().float()
        # .grad collects the gradient of the global batch's mean loss (times the fp16 loss scale):
        # scaled_loss = loss_scale * loss, whose gradients Kronecker optimizers divide back out of their ĝ
        scaled_loss = scaler.scale(loss) / gradient_accumulation_steps
        if backward is not None:
            backward(scaled_loss, logits, scaler.get_scale() / gradient_accumulation_steps)
        else:
            scaled_loss.backward()
    loss_sum += iter_loss
    iter_losses.append(iter_loss / gradient_accumulation_steps)
    t1 = clock()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    step_batches = lambda: [get_batch('train', 0, iter_num, ddp_rank * gradient_accumulation_steps + m)  # noqa: E731
                            for m in range(gradient_accumulation_steps)]  # this rank's micro-batches of this step
    if getattr(optimizer, 'needs_batches', False):  # step_rule='quadratic': α, μ from the model on the step's batches
        optimizer.set_quadratic_batches(raw_model, step_batches())
    scaler.step(optimizer)
    scaler.update()
    if getattr(optimizer, 'lm_pending', False):  # damping_schedule='lm': the step's reduction ratio adapts λ
        optimizer.adapt_damping(raw_model, step_batches())
    optimizer.zero_grad(set_to_none=True)
    t2 = clock()
    phase_s['fwd_bwd'] += t1 - t0
    phase_s['step'] += t2 - t1
    iters_since_log += 1
    iter_num += 1
    skipped = getattr(optimizer, 'skipped_steps', 0)  # the optimizer's NaN guard skipped this step
    skipped_in_a_row, skipped_before = (skipped_in_a_row + 1 if skipped > skipped_before else 0), skipped
    if skipped_in_a_row >= max_skipped_steps:
        stop_diverged(f"{skipped_in_a_row} steps in a row skipped for non-finite gradients or factors, "
                      f"up to iteration {iter_num}")
    if iter_num % log_interval == 0 or iter_num % eval_interval == 0 or iter_num >= max_iters:
        # every iteration's loss (not only the mean of a log interval), checked before it is logged or evaluated
        losses_now = torch.stack(iter_losses)
        if ddp:  # each iteration's loss over the global batch: the same check for any number of ranks
            dist.all_reduce(losses_now)
            losses_now /= ddp_world_size
        worst = losses_now.nan_to_num(nan=math.inf).max().item()
        if not worst <= loss_ceiling:
            said = 'NaN' if losses_now.isnan().any() else f'{worst:.4g}'
            stop_diverged(f"an iteration's loss reached {said} by iteration {iter_num}, above "
                          f"ln(vocab_size) + divergence_nats = {loss_ceiling:.3g}")
        iter_losses.clear()

    if iter_num % log_interval == 0 or iter_num == max_iters:
        # the mean loss of the global batches since the last log (a sync point: the .item() waits for the GPU)
        if ddp:
            dist.all_reduce(loss_sum)
        lossf = loss_sum.item() / (iters_since_log * gradient_accumulation_steps * ddp_world_size)
        now = time.time()
        train_time_s += now - t_log
        dt = (now - t_log) / iters_since_log
        if master_process:
            peak_mem_mb = torch.cuda.max_memory_allocated() / 2**20 if device_type == 'cuda' else \
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (Linux: KiB)
            record = dict(iter=iter_num, kind='train', loss=lossf, lr=lr, ms_per_iter=dt * 1000,
                          tokens_per_s=tokens_per_iter / dt, time_s=train_time_s, peak_mem_mb=peak_mem_mb,
                          **{f'ms_{k}': 1000 * v / iters_since_log for k, v in phase_s.items()})
            if hasattr(optimizer, 'diagnostics'):
                record.update(optimizer.diagnostics())
            log_metrics(record)
            eta = (max_iters - iter_num) * dt
            # model flops utilisation of an A100's bf16 peak, as nanoGPT reports it (GPUs only)
            mfu = '' if device_type != 'cuda' else \
                f", mfu {raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt) * 100:.1f}%"
            print(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {dt * 1000:.1f} ms/iter, "
                  f"{tokens_per_iter / dt:,.0f} tok/s{mfu}, eta {int(eta // 60)}m{int(eta % 60):02d}s")
        loss_sum.zero_()
        phase_s = dict.fromkeys(phase_s, 0.0)
        t_log, iters_since_log = time.time(), 0

if master_process and not eval_only:
    where = f"{out_dir}/ckpt.pt (iteration {saved_iter})" if saved_iter is not None else "no new checkpoint"
    final = f"final val loss {last_val:.4f}, " if last_val is not None else ""
    print(f"done: {iter_num} iterations, {final}best {best_val_loss:.4f}, {train_time_s:.1f} s of training, {where}")
if ddp:
    leave_process_group()
