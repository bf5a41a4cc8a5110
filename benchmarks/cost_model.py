"""
A cost model of one training step, for planning past this machine: from a model config, the tokens per step, the
ranks, the update frequencies and the method, the FLOPs of forward+backward, factor capture, decompositions
(amortised over inv_update_freq; the Kronecker methods' spread over the ranks) and preconditioning, the bytes of the
optimizer's state per rank (factors, decompositions, buffers, moments), and the predicted step time and its ratio
to AdamW's.

$ python -m benchmarks.cost_model config/fixed_fisher_small.py                     # the small model, this CPU's rates
$ python -m benchmarks.cost_model config/train_gpt2.py --tokens_per_step=524288 --ranks=8 --rates=h100
$ python -m benchmarks.cost_model config/adamw_small.py --calibrate                  # measure this machine's rates
$ python -m benchmarks.cost_model config/adamw_small.py --calibrate --measured=results/timing_all_small/results.json
                                                           # and the prediction against a timing study's ms
$ python -m benchmarks.cost_model config/train_gpt2.py --calibrate --device=cuda --sizes=256,512,1024,2048,4096 \
      --save_rates=rates.json                              # a GPU's rates (benchmarks/gpu.py does this), then
$ python -m benchmarks.cost_model config/train_gpt2.py --tokens_per_step=524288 --ranks=8 --rates=rates.json

Counts, per preconditioned nn.Linear (d_in [+1 with a bias] x d_out, DESIGN.md's factors) and N tokens per rank:
    forward 2 N d_in d_out, backward twice that (all Linears, the tied lm_head too), attention 4 N T d per layer
    forward (QK^T and AV), backward twice
    factor capture 2 N (d_in^2 + d_out^2) on factor-update steps, amortised: / factor_update_freq; with
    kfac_approx='reduce' 2 (N / T) (d_in^2 + d_out^2): one row per sequence (the sums over its T tokens are
    elementwise, not counted)
    eigh 9 n^3 (Golub & Van Loan's symmetric QR with eigenvectors), a Cholesky inverse n^3 (n^3/3 + 2n^3/3; on a
    GPU KFAC runs Newton-Schulz, its rate calibrated as n^3-equivalent),
    amortised: / inv_update_freq, and / ranks (each layer is decomposed on one rank; SOAP's QRs are not spread)
    preconditioning: kfac 2 products, 2 d_out d_in (d_in + d_out); eigenbasis methods 4 products, twice that;
    ekfac also its eigenbasis moments on factor-update steps, 2 N (d_in^2 + d_out^2 + d_in d_out)
    muon: 5 Newton-Schulz steps on each block matrix (m <= n): 5 (4 m^2 n + 2 m^3)
    soap (pytorch-optimizer's, on every 2-D weight, the embeddings too; an axis n <= max_factor_dim is rotated, m
    the other): per rotated axis, its factor G G^T every step 2 n^2 m (counted as capture), three projections
    (the gradient and Adam's first moment into the basis, the update back) 3 x 2 n^2 m, and every
    inv_update_freq a power step GG Q 2 n^3 and a QR (Householder 4n^3/3 and forming Q 4n^3/3)
    psgd (heavyball's PSGD-Kron on the block matrices; an axis n <= max_factor_dim has a triangular Q, wider ones a
    diagonal, not counted): applying P = Q^T Q every step, per axis two products 4 n^2 m, or, where n < m, Q^T Q
    first and one product 2 n^3 + 2 n^2 m (the order opt_einsum picks); fitting Q with the mean probability of
    heavyball's schedule over the run's steps (max_iters; every step for 1,000, then 0.999^k down to 0.03; with
    --measured, the timing runs' length): per axis A = Q h 2 n^2 m, B = Q^-T v (a triangular solve) n^2 m,
    A_i A_i^T and B_i B_i^T 4 n^2 m, 2 power iterations bounding the step (6 products with a vector, 12 n^2) and
    the step on Q 2 n^3 (all counted as preconditioning)
Time: forward+backward and Muon's Newton-Schulz (bfloat16 on GPUs) at the matmul rate; factor capture and the other
methods' preconditioning (float32; TF32 on GPUs, which train.py allows) at the fp32 matmul rate, but Fixed Fisher's
and EKFAC's eigenbasis solve (kernels.eigenbasis_precondition: on GPUs a Triton kernel whose float32 products are
tf32x3, ~3 TF32 passes) at the eigenbasis rate; decompositions at the eigh (KFAC: damped-inverse; SOAP: QR) rate for
their size n (a rate per size, interpolated in log n, as --calibrate measures it: eigh runs faster per FLOP on larger
matrices; or one rate for all sizes), AdamW's elementwise update at the memory bandwidth (16 bytes read and written
per parameter and step, fp32 moments). The ratio to AdamW is the method's total over AdamW's on the same model and
tokens. Rates: --rates=cpu1 (a development CPU, one thread, measured by --calibrate on sizes 64-1024; the three matmul
rates one float32 measurement), h100 (assumed: 400 TFLOP/s bf16 and 200 TFLOP/s TF32 matmul, ~40% of the SXM's dense
peaks, a third of TF32's for tf32x3; 1 TFLOP/s fp32 eigh and QR, 5 TFLOP/s n^3-equivalent for the damped inverse, 2
TB/s), a JSON file of --save_rates, or --matmul_flops_per_s=... --fp32_matmul_flops_per_s=...
--eigenbasis_flops_per_s=... --eigh_flops_per_s=... --inverse_flops_per_s=... --qr_flops_per_s=... --bytes_per_s=...
"""

import argparse
import json
import math
import os
import sys

import torch

import kernels
from benchmarks.kernels import spd, timeit
from model import GPT, GPTConfig
from optim.capture import split_layers

EIGH, INVERSE, QR, NS_STEPS = 9, 1, 8 / 3, 5  # FLOPs of an n x n eigh / Cholesky inverse / QR in n^3; Muon's NS steps
CALIBRATION_SIZES = (64, 128, 256, 512, 1024)
# cpu1: --calibrate on a development machine (2-core Intel Xeon, one thread, float32; decompositions {n: FLOP/s}),
# results/scale/timing_width256/rates.json to two digits; h100: assumed, see above
RATES = dict(cpu1=dict(matmul_flops_per_s=1.8e11, fp32_matmul_flops_per_s=1.8e11, eigenbasis_flops_per_s=1.8e11,
                       bytes_per_s=4.2e10,
                       eigh_flops_per_s={64: 1.8e10, 128: 3.5e10, 256: 6.6e10, 512: 1.1e11, 1024: 1.2e11},
                       inverse_flops_per_s={64: 1.6e9, 128: 5.4e9, 256: 1.6e10, 512: 2.9e10, 1024: 2.5e10},
                       qr_flops_per_s={64: 1.1e10, 128: 1.7e10, 256: 3.5e10, 512: 5.5e10, 1024: 4.6e10}),
             h100=dict(matmul_flops_per_s=4e14, fp32_matmul_flops_per_s=2e14, eigenbasis_flops_per_s=6.7e13,
                       eigh_flops_per_s=1e12, inverse_flops_per_s=5e12, qr_flops_per_s=1e12, bytes_per_s=2e12))
RATE_KEYS = ('matmul_flops_per_s', 'fp32_matmul_flops_per_s', 'eigenbasis_flops_per_s', 'eigh_flops_per_s',
             'inverse_flops_per_s', 'qr_flops_per_s', 'bytes_per_s')
MATMUL_KEYS = RATE_KEYS[:3]  # one number each (the best over sizes); the decompositions' are {n: FLOP/s} tables
KRONECKER = {'kfac': ('inverse', 2), 'fixed_fisher': ('eigh', 4), 'ekfac': ('eigh', 4)}  # (decomposition, products)
METHODS = ['adamw', *KRONECKER, 'muon', 'soap', 'psgd']  # eva, iEF, KPSVD, DyKAF: not modelled yet
PSGD_SCHEDULE = dict(flat=1000, decay=0.999, floor=0.03)  # heavyball's precond_update_prob_schedule defaults


def layers_of(cfg, exclude='', max_factor_dim=4096):
    """(the model's nn.Linear shapes [(d_in, d_out, bias)], the preconditioned ones as split_layers picks them
    [(d_in [+1], d_out)], {parameter name: shape} (tied weights once), the parameter count), from a model built on
    the meta device (no memory, any size)."""
    with torch.device('meta'):
        model = GPT(GPTConfig(**cfg))
    linears = [(m.in_features, m.out_features, m.bias is not None) for m in model.modules()
               if isinstance(m, torch.nn.Linear)]
    pre, _ = split_layers(model, exclude, max_factor_dim)
    kron = [(m.in_features + (m.bias is not None), m.out_features) for m in pre.values()]
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    return linears, kron, shapes, sum(p.numel() for p in model.parameters())


def psgd_fit_fraction(steps, flat=PSGD_SCHEDULE['flat'], decay=PSGD_SCHEDULE['decay'], floor=PSGD_SCHEDULE['floor']):
    """The mean probability of a PSGD preconditioner fit over steps 1 ... steps of heavyball's schedule
    p(n) = max(floor, decay^max(n - flat, 0)): 1 for the first flat steps, then a geometric sum while decay^k is
    above the floor (k <= K), then the floor."""
    if steps < 1:
        raise ValueError(f"steps={steps!r}: a run has at least one step")
    K = math.floor(math.log(floor) / math.log(decay))
    annealed = max(steps - flat, 0)
    k = min(annealed, K)
    return (min(steps, flat) + decay * (1 - decay ** k) / (1 - decay) + floor * (annealed - k)) / steps


def step_cost(method, cfg, tokens_per_step, ranks=1, factor_update_freq=10, inv_update_freq=10, exclude='',
              max_factor_dim=4096, grafting='none', kfac_approx='expand', steps=600000):
    """{part: FLOPs (or bytes, for 'adamw_bytes')} of one step on one rank, 'decomp_by_size' {n: FLOPs} and
    'decomp_kind' (the rate they run at: eigh, inverse or qr), 'precond_rate' (the preconditioning's rate: matmul for
    Muon's bfloat16 Newton-Schulz, eigenbasis for the eigenbasis solve, else fp32_matmul), and 'state_bytes': the
    method's own state per rank, float32: the Kronecker factors, decompositions, momentum buffer and grafting moments
    as the optimizer's layer_state holds them; Muon's momentum; SOAP's factors and bases and its Adam moments of
    every parameter (it runs on all of them); PSGD's momentum and Q's (a triangular one as heavyball stores it,
    n(n + 1)/2; a diagonal one n). Not counted: AdamW's moments of the weights the others leave to it, and scalar step
    counts and bounds. tokens_per_step over all ranks; steps: the run's length (PSGD's fit schedule)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; the cost model knows {', '.join(METHODS)}")
    if kfac_approx not in ('expand', 'reduce'):
        raise ValueError(f"unknown kfac_approx {kfac_approx!r}; known: expand, reduce")
    linears, kron, shapes, n_params = layers_of(cfg, exclude, max_factor_dim)
    blocks = [s for n, s in shapes.items() if n.startswith('transformer.h.') and len(s) == 2]  # (out, in)
    N, T, d, L = tokens_per_step / ranks, cfg['block_size'], cfg['n_embd'], cfg['n_layer']
    forward = sum(2 * N * i * o for i, o, _ in linears) + 4 * N * T * d * L
    cost = dict(fwd_bwd=3 * forward, capture=0.0, precond=0.0, adamw_bytes=16.0 * n_params,
                state_bytes=0.0, decomp_by_size={}, decomp_kind=None, precond_rate='fp32_matmul_flops_per_s')
    if method in KRONECKER:
        kind, products = KRONECKER[method]
        rows = N / T if kfac_approx == 'reduce' else N  # a sequence a sample, or a token
        cost['capture'] = sum(2 * rows * (i * i + o * o) for i, o in kron) / factor_update_freq
        per = EIGH if kind == 'eigh' else INVERSE
        cost['decomp_by_size'] = decompositions([n for i, o in kron for n in (i, o)], per, inv_update_freq * ranks)
        cost['decomp_kind'] = kind
        if kind == 'eigh':  # U = Q_G [(Q_G^T V Q_A) / D] Q_A^T
            cost['precond_rate'] = 'eigenbasis_flops_per_s'
        cost['precond'] = sum(products * o * i * (i + o) for i, o in kron)
        if method == 'ekfac':  # (g Q_G)^2, (a Q_A)^2 and their product, on factor-update steps
            cost['capture'] += sum(2 * N * (i * i + o * o + i * o) for i, o in kron) / factor_update_freq
        buffers = 1 + (2 if grafting == 'adam' else 0) + (1 if method == 'ekfac' else 0)  # momentum, m, v; EKFAC's s
        if kind == 'eigh':  # A, G, Q_A, Q_G, s_A, s_G
            cost['state_bytes'] = 4.0 * sum(2 * (i * i + o * o) + i + o + buffers * i * o for i, o in kron)
        else:  # A, G, A_inv, G_inv
            cost['state_bytes'] = 4.0 * sum(2 * (i * i + o * o) + buffers * i * o for i, o in kron)
    elif method == 'muon':
        cost['precond_rate'] = 'matmul_flops_per_s'  # Newton-Schulz in bfloat16 on GPUs
        cost['precond'] = sum(NS_STEPS * (4 * min(s) ** 2 * max(s) + 2 * min(s) ** 3) for s in blocks)
        cost['state_bytes'] = 4.0 * sum(o * i for o, i in blocks)  # momentum
    elif method == 'soap':
        rotated = [(n, m) for s in shapes.values() if len(s) == 2 for n, m in axes(s) if n <= max_factor_dim]
        cost['capture'] = sum(2 * n * n * m for n, m in rotated)  # G G^T every step
        cost['precond'] = sum(3 * 2 * n * n * m + 2 * n ** 3 / inv_update_freq for n, m in rotated)
        cost['decomp_by_size'] = decompositions([n for n, _ in rotated], QR, inv_update_freq)
        cost['decomp_kind'] = 'qr'
        cost['state_bytes'] = 4.0 * (2 * n_params + sum(2 * n * n for n, _ in rotated))  # m, v; GG, Q
    elif method == 'psgd':
        triangular = [(n, m) for s in blocks for n, m in axes(s) if n <= max_factor_dim]
        cost['precond'] = sum(psgd_apply(n, m) + psgd_fit_fraction(steps) * psgd_fit(n, m) for n, m in triangular)
        cost['state_bytes'] = 4.0 * sum(o * i + sum(n * (n + 1) // 2 if n <= max_factor_dim else n for n in (o, i))
                                        for o, i in blocks)  # momentum, Q
    cost['decomp'] = sum(cost['decomp_by_size'].values())
    return cost


def axes(shape):
    """A matrix's two axes as (n, m): the axis's size and the other's."""
    return [(shape[0], shape[1]), (shape[1], shape[0])]


def psgd_apply(n, m):
    """FLOPs of P = Q^T Q applied along an axis of size n of an n x m gradient, in the order opt_einsum picks: two
    products, or Q^T Q first where that is cheaper (n < m)."""
    return 2 * n * n * m + 2 * n * n * min(n, m)


def psgd_fit(n, m):
    """FLOPs of one fit of an axis's Q: A = Q h, B = Q^-T v (a triangular solve), A_i A_i^T and B_i B_i^T, 2 power
    iterations on their sum (heavyball's default: 6 products with a vector) and the step on Q."""
    return 2 * n * n * m + n * n * m + 2 * 2 * n * n * m + 6 * 2 * n * n + 2 * n ** 3


def decompositions(sizes, per, amortised):
    """{n: FLOPs}: one n x n decomposition (per n^3 FLOPs) for each n in sizes, / amortised, summed by n (the rate
    depends on n)."""
    by_size = {}
    for n in sizes:
        by_size[n] = by_size.get(n, 0) + per * n ** 3 / amortised
    return by_size


def rate_at(rate, n):
    """A rate at size n: a number as it is; a table {size: FLOP/s} interpolated linearly in log size between
    its sizes, its end values beyond them."""
    if not isinstance(rate, dict):
        return rate
    sizes = sorted(rate)
    if n <= sizes[0] or n >= sizes[-1]:
        return rate[sizes[0] if n <= sizes[0] else sizes[-1]]
    hi = next(k for k in sizes if k >= n)
    lo = sizes[sizes.index(hi) - 1]
    t = math.log(n / lo) / math.log(hi / lo)
    return rate[lo] + t * (rate[hi] - rate[lo])


def step_seconds(cost, rates):
    """{part: predicted seconds} from step_cost's FLOPs and the rates."""
    decomp_rate = rates[f"{cost['decomp_kind']}_flops_per_s"] if cost['decomp_kind'] else 1.0  # (no FLOPs)
    out = dict(fwd_bwd=cost['fwd_bwd'] / rates['matmul_flops_per_s'],
               capture=cost['capture'] / rates['fp32_matmul_flops_per_s'],
               decomp=sum(f / rate_at(decomp_rate, n) for n, f in cost['decomp_by_size'].items()),
               precond=cost['precond'] / rates[cost['precond_rate']],
               adamw=cost['adamw_bytes'] / rates['bytes_per_s'])
    out['total'] = sum(out.values())
    return out


def calibrate(sizes=CALIBRATION_SIZES, device='cpu', matmul_dtype=None):
    """This machine's rates (on a CPU: on the current thread count), with TF32 allowed as train.py allows it: the
    matmul FLOP/s in matmul_dtype (default: bfloat16 on a GPU, float32 on a CPU), in float32, and of the eigenbasis
    solve (kernels.eigenbasis_precondition, 4 products of 2n^3), each the best over sizes (a large model's matmuls are
    as large as the largest); where the first two are one dtype, or the solve runs as torch's float32 products (on a
    CPU), one measurement stands for them. At each size ({n: FLOP/s}) float32 eigh, KFAC's damped inverse
    (kernels.damped_inverse: Cholesky on a CPU, Triton Newton-Schulz on a GPU; counted as n^3 FLOPs whatever it runs)
    of a factor-like matrix and QR (SOAP's) of a factor times a basis; and the bandwidth of an elementwise float32
    update."""
    cuda = torch.device(device).type == 'cuda'
    matmul_dtype = matmul_dtype or (torch.bfloat16 if cuda else torch.float32)
    best = lambda fn: timeit(fn, cuda=cuda) / 1e3  # noqa: E731  (seconds: best of a few runs; on a GPU the median)

    rates = {k: [] for k in RATE_KEYS if k != 'bytes_per_s'}
    allowed, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, True  # as train.py
    try:
        for n in sizes:
            X = torch.randn(n, n, device=device, dtype=matmul_dtype)
            M = spd(n, 1, device)[0]  # eigenvalues 1 ... 1e-6, as a factor's
            rates['matmul_flops_per_s'].append(2 * n ** 3 / best(lambda: X @ X))
            fp32 = rates['matmul_flops_per_s'][-1] if matmul_dtype == torch.float32 else \
                2 * n ** 3 / best(lambda: M @ M)
            rates['fp32_matmul_flops_per_s'].append(fp32)
            solve = fp32  # on a CPU torch's float32 products, as above; on a GPU the Triton kernel:
            if cuda:
                Q, D = torch.linalg.qr(M)[0], M.abs() + 1
                solve = 8 * n ** 3 / best(lambda: kernels.eigenbasis_precondition(M, Q, Q, D))
            rates['eigenbasis_flops_per_s'].append(solve)
            rates['eigh_flops_per_s'].append(EIGH * n ** 3 / best(lambda: torch.linalg.eigh(M)))
            rates['inverse_flops_per_s'].append(INVERSE * n ** 3 / best(lambda: kernels.damped_inverse(M, 1e-3)))
            MQ = M @ torch.linalg.qr(torch.randn(n, n, device=device))[0]  # SOAP's power step GG Q
            rates['qr_flops_per_s'].append(QR * n ** 3 / best(lambda: torch.linalg.qr(MQ)))
        p, m = torch.randn(2 ** 22, device=device), torch.randn(2 ** 22, device=device)
        rates['bytes_per_s'] = 12 * p.numel() / best(lambda: p.add_(m, alpha=-1e-3))  # read p and m, write p
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    return {k: max(v) if k in MATMUL_KEYS else v if k == 'bytes_per_s' else dict(zip(sizes, v))
            for k, v in rates.items()}


def show_rate(rate):
    """'6e+10', or a table as '3.8e+10@128 6.9e+10@256 ...'."""
    return ' '.join(f'{v:.3g}@{n}' for n, v in sorted(rate.items())) if isinstance(rate, dict) else f'{rate:.3g}'


def load_rates(name):
    """A preset of RATES by name, or the rates a --save_rates JSON file holds (its tables' sizes back to int)."""
    if name in RATES:
        return dict(RATES[name])
    if not os.path.isfile(name):
        raise ValueError(f"--rates={name!r} is neither a preset ({', '.join(sorted(RATES))}) nor a file")
    with open(name) as f:
        rates = {k: {int(n): r for n, r in v.items()} if isinstance(v, dict) else v for k, v in json.load(f).items()}
    if set(rates) != set(RATE_KEYS):
        raise ValueError(f"--rates={name!r} holds {sorted(rates)}; expected {sorted(RATE_KEYS)}")
    return rates


def read_config(path, overrides):
    """The train.py globals the cost model needs, from train.py's defaults, a config file and --key=value."""
    keys = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=False, vocab_size=50304, dropout=0.0,
                attention='softmax', batch_size=12, gradient_accumulation_steps=40, optimizer='adamw',
                factor_update_freq=10, inv_update_freq=10, exclude='', max_factor_dim=4096, grafting='none',
                kfac_approx='expand', max_iters=600000)
    if path:
        scope = {}
        exec(open(path).read(), scope)
        keys.update({k: scope[k] for k in keys if k in scope})
        if scope.get('dataset') == 'shakespeare_char':
            keys['vocab_size'] = 65
    for key, value in overrides.items():
        keys[key] = type(keys[key])(value) if key in keys and keys[key] is not None else value
    return keys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', default=None, help="a train.py config file")
    p.add_argument('--tokens_per_step', type=int, default=None, help="over all ranks (default: the config's)")
    p.add_argument('--ranks', type=int, default=1)
    p.add_argument('--methods', default=','.join(METHODS))
    p.add_argument('--rates', default='cpu1', help=f"{', '.join(sorted(RATES))}, or a JSON file of --save_rates")
    p.add_argument('--save_rates', default=None, help="write the rates used (e.g. --calibrate's) to this JSON file")
    p.add_argument('--calibrate', action='store_true', help="measure this machine's rates and use them")
    p.add_argument('--device', default='cpu', help="where --calibrate measures (cuda: matmuls in bfloat16 and TF32)")
    p.add_argument('--sizes', default=','.join(map(str, CALIBRATION_SIZES)), help="--calibrate's matrix sizes")
    for key in RATE_KEYS:
        p.add_argument(f'--{key}', type=float, default=None)
    p.add_argument('--set', action='append', default=[], help="a config key=value (n_embd=256, ...), repeatable")
    p.add_argument('--measured', default=None, help="a timing study's results.json (study.py, e.g. "
                   "config/studies/timing_all_small.py) of the same model: predicted against measured ms per part")
    args = p.parse_args(argv)
    overrides = dict(s.split('=', 1) for s in args.set)
    cfg = read_config(args.config, overrides)
    measured = measured_rows(args.measured) if args.measured else {}
    lengths = [r['iters'] for r in measured.values() if r.get('iters')]
    if lengths and 'max_iters' not in overrides:  # PSGD's fit schedule: the timing runs' length
        cfg['max_iters'] = max(lengths)
    rates = calibrate(tuple(int(n) for n in args.sizes.split(',')), args.device) if args.calibrate \
        else load_rates(args.rates)
    rates.update({k: getattr(args, k) for k in rates if getattr(args, k) is not None})
    if args.save_rates:
        with open(args.save_rates, 'w') as f:
            json.dump(rates, f, indent=1)
    tokens = args.tokens_per_step or cfg['batch_size'] * cfg['block_size'] * cfg['gradient_accumulation_steps']
    model = {k: cfg[k] for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'vocab_size', 'dropout',
                                 'attention')}
    n_params = layers_of(model)[3]
    print(f"model {cfg['n_layer']}x{cfg['n_embd']} ({n_params / 1e6:.1f}M parameters), {tokens:,} tokens per step "
          f"on {args.ranks} rank(s); rates: " + ', '.join(f'{k} {show_rate(v)}' for k, v in rates.items()))
    if 'psgd' in args.methods.split(','):
        print(f"psgd fits its preconditioner on {psgd_fit_fraction(cfg['max_iters']):.3f} of the steps of a "
              f"{cfg['max_iters']:,}-step run (--set=max_iters=...; with --measured, its runs' length)")
    print("| method | GFLOP fwd+bwd | capture | decomp | precond | state MB/rank | ms fwd+bwd | capture | decomp | "
          "precond | adamw | total | x adamw |\n" + "|---" * 13 + "|")
    base, predicted = None, {}
    for method in args.methods.split(','):
        c = step_cost(method, model, tokens, ranks=args.ranks, steps=cfg['max_iters'],
                      **{k: cfg[k] for k in ('factor_update_freq', 'inv_update_freq', 'exclude', 'max_factor_dim',
                                             'grafting', 'kfac_approx')})
        s = step_seconds(c, rates)
        base = s['total'] if method == 'adamw' else base
        ratio = f"{s['total'] / base:.2f}" if base else '—'
        print(f"| {method} | " + ' | '.join(f"{c[k] / 1e9:.3g}" for k in ('fwd_bwd', 'capture', 'decomp', 'precond'))
              + f" | {c['state_bytes'] / 2 ** 20:.1f} | "
              + ' | '.join(f"{1e3 * s[k]:.3g}" for k in ('fwd_bwd', 'capture', 'decomp', 'precond', 'adamw', 'total'))
              + f" | {ratio} |")
        predicted[method] = s
    if measured:
        print(against_measured(predicted, measured))
    return 0


def measured_rows(path):
    """{optimizer: its first ok row} of a timing study's results.json (timing_all_small: its plain config, before
    the M&G variants)."""
    with open(path) as f:
        rows = {}
        for r in json.load(f)['rows']:
            if r.get('status') == 'ok' and r.get('ms_per_iter'):
                rows.setdefault(r['optimizer'], r)
    return rows


def against_measured(predicted, rows):
    """A markdown table: each method's predicted ms per part (step_seconds) beside the medians a timing study
    measured (rows: measured_rows', their ms_fwd_bwd, ms_decomp, ms_precond, ms_per_iter), its total less
    AdamW's (the optimizer's own cost, both ways), and both ratios to AdamW.
    Measured forward+backward holds the Kronecker methods' factor hooks (their capture is predicted there);
    preconditioning holds grafting, momentum and the update. SOAP's factors are built in its step: predicted
    with its preconditioning."""
    fmt = lambda x: '—' if x is None else f'{x:.1f}'  # noqa: E731
    out = ["| method | fwd+bwd predicted / measured ms | decomp | precond | total | over adamw's total | "
           "× adamw predicted / measured |", "|---|---|---|---|---|---|---|"]
    base = (predicted.get('adamw'), rows.get('adamw'))
    for method, s in predicted.items():
        m = rows.get(method)
        if m is None:
            continue
        hooks = s['capture'] if method in KRONECKER else 0.0
        pairs = [(1e3 * (s['fwd_bwd'] + hooks), m.get('ms_fwd_bwd')), (1e3 * s['decomp'], m.get('ms_decomp')),
                 (1e3 * (s['precond'] + s['capture'] - hooks), m.get('ms_precond')),
                 (1e3 * s['total'], m['ms_per_iter'])]
        # the method's extra time over AdamW's step
        pairs.append((1e3 * (s['total'] - base[0]['total']), m['ms_per_iter'] - base[1]['ms_per_iter']) if all(base)
                     else (None, None))
        cells = [f"{fmt(p)} / {fmt(q)}" for p, q in pairs]
        ratio = f"{s['total'] / base[0]['total']:.2f} / {m['ms_per_iter'] / base[1]['ms_per_iter']:.2f}" \
            if all(base) else '—'
        out.append(f"| {method} | " + ' | '.join(cells) + f" | {ratio} |")
    return '\n'.join(out)


if __name__ == '__main__':
    sys.exit(main())
