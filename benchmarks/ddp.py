"""
Per-step time and bytes communicated of each optimizer on 1 and 2 CPU ranks (DDP over gloo, torch.multiprocessing),
a small GPT, the same global batch for any number of ranks. Bytes per step, payload of the collectives on one rank:
ddp_mb, DDP's gradient all-reduce (every gradient once a step); opt_mb, the optimizer's own (factor all-reduce on
factor-update steps, decomposition or preconditioned-gradient broadcasts: its comm_mb diagnostic).

$ OMP_NUM_THREADS=1 python -m benchmarks.ddp                           # tiny, every optimizer, 1 and 2 ranks
$ python -m benchmarks.ddp --optimizers=kfac,fixed_fisher --factor_update_freq=1 --inv_update_freq=1 --n_embd=128
"""

import argparse
import contextlib
import io
import os
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GPT, GPTConfig
from optim import OPTIMIZERS, build_optimizer, optimizer_kwargs
from optim.distributed import leave_process_group

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument('--optimizers', default=','.join(OPTIMIZERS), help=f'comma-separated, of {sorted(OPTIMIZERS)}')
parser.add_argument('--ranks', default='1,2', help='comma-separated numbers of ranks')
parser.add_argument('--distribute', default='decomposition,gradient', help="Kronecker optimizers' modes under DDP")
parser.add_argument('--n_layer', type=int, default=2)
parser.add_argument('--n_embd', type=int, default=64)
parser.add_argument('--n_head', type=int, default=2)
parser.add_argument('--block_size', type=int, default=64)
parser.add_argument('--batch_size', type=int, default=8, help='sequences per step, over all ranks')
parser.add_argument('--factor_update_freq', type=int, default=10)
parser.add_argument('--inv_update_freq', type=int, default=10)
parser.add_argument('--steps', type=int, default=20, help='timed steps, after one untimed inverse-update period')
args = parser.parse_args()


def bench(rank, world, name, distribute):
    """(ms per step, DDP MB per step, optimizer MB per step, update_decomposition calls on this rank per step)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head, block_size=args.block_size,
                          vocab_size=256, bias=True))
    cfg = dict(lr=1e-3, weight_decay=0.1, factor_update_freq=args.factor_update_freq, beta1=0.9, beta2=0.95,
               inv_update_freq=args.inv_update_freq, kl_clip=1e-3)
    with contextlib.redirect_stdout(io.StringIO()):  # the optimizers' start-up lines
        opt = build_optimizer(name, model, **optimizer_kwargs(name, cfg))
        if distribute:
            opt.distribute = distribute
    net = DDP(model) if world > 1 else model
    backward = getattr(opt, 'backward', None)
    g = torch.Generator().manual_seed(rank)
    B = args.batch_size // world

    def step():
        X = torch.randint(0, 256, (B, args.block_size), generator=g)
        logits, loss = net(X, X)
        backward(loss, logits) if backward else loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.inv_update_freq):  # warm up one period
        step()
    ranks, done = getattr(opt, 'ranks', None), getattr(opt, 'decompositions', 0)
    if ranks is not None:  # the factor averaging counts in the capture, the rest in ranks
        ranks.comm_bytes = opt.capture.comm_bytes = 0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    ms = 1000 * (time.perf_counter() - t0) / args.steps
    ddp_mb = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / 2**20
    opt_mb = (ranks.comm_bytes + opt.capture.comm_bytes) / 2**20 / args.steps if ranks is not None else 0.0
    return ms, ddp_mb if world > 1 else 0.0, opt_mb, (getattr(opt, 'decompositions', 0) - done) / args.steps


def worker(rank, world, folder, runs):
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))
    if world > 1:
        dist.init_process_group('gloo', init_method=f'file://{folder}/store', rank=rank, world_size=world,
                                timeout=timedelta(seconds=120))
    rows = []
    for name, distribute in runs:
        try:
            rows.append((name, distribute, *bench(rank, world, name, distribute)))
        except Exception as e:
            rows.append((name, distribute, f'{type(e).__name__}: {e}'))
    if rank == 0:
        torch.save(rows, f'{folder}/rows.pt')
    if world > 1:
        leave_process_group()


if __name__ == '__main__':
    names = args.optimizers.split(',')
    modes = args.distribute.split(',')
    print(f"GPT {args.n_layer} layers x {args.n_embd}, {args.batch_size} x {args.block_size} tokens per step, "
          f"factor_update_freq={args.factor_update_freq}, inv_update_freq={args.inv_update_freq}, "
          f"{args.steps} steps, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}")
    print(f"{'optimizer':>14} {'distribute':>14} {'ranks':>5} {'ms/step':>9} {'ddp_mb':>8} {'opt_mb':>8} "
          f"{'decomp/step':>11}")
    for world in map(int, args.ranks.split(',')):
        runs = []
        for name in names:
            kron = hasattr(OPTIMIZERS[name], 'update_decomposition')
            runs += [(name, m) for m in modes] if kron and world > 1 else [(name, None)]
        with tempfile.TemporaryDirectory() as folder:
            mp.spawn(worker, args=(world, folder, runs), nprocs=world)
            rows = torch.load(f'{folder}/rows.pt')
        for name, distribute, *row in rows:
            cells = f"{row[0]:9.1f} {row[1]:8.3f} {row[2]:8.3f} {row[3]:11.2f}" if len(row) == 4 else row[0][:80]
            print(f"{name:>14} {distribute or '-':>14} {world:>5} {cells}")
