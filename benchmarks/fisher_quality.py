"""
How close is each optimizer's update to the natural gradient? For checkpoints of a run and one batch, each method's
update Δ is scored by the indicator of Wu et al. (2024, "An Improved Empirical Fisher Approximation for Natural
Gradient Descent", NeurIPS, section 6):

    γ(Δ) = sqrt(Δᵀ F Δ) / |Δᵀ ∇L|

F the exact Fisher of the model's softmax cross-entropy, which is its GGN, F = (1/M) Σ_m J_mᵀ (diag(p_m) − p_m p_mᵀ) J_m
with J_m the Jacobian of token m's logits: Δᵀ F Δ takes one Jacobian-vector product and F is never formed. γ does
not depend on Δ's scale, and no direction beats the natural gradient F⁻¹∇L, where γ² = 1/(∇Lᵀ F⁻¹ ∇L)
(Cauchy-Schwarz). The table and the plot give γ(Δ)/γ(∇L): below 1 beats SGD.

$ python -m benchmarks.fisher_quality --ckpts=out-a,out-b,out-c
$ python -m benchmarks.fisher_quality --ckpts=out-a --methods=sgd,kfac,fixed_fisher,ng --dampings=1e-3,1e-2 --out=fq.png

Δ of a Kronecker method (kfac, eva, fixed_fisher, ekfac, ief, iekfac, kpsvd, kfac_corrected; ief_tokens is iEF
with samples='tokens'): its optimizer with the step contract of DESIGN.md (momentum 0, no weight decay or KL clip,
factor_decay 0, both frequencies 1) and lr 1, one step on the batch at the checkpoint, Δ = W_before − W_after: its
preconditioned gradient from this batch's factors alone. Only the preconditioned layers count (every nn.Linear but
the tied lm_head): the other parameters (embeddings, norms) are 0 in Δ for every method, SGD's ∇L included.
'adamw' and 'dykaf' need a history of gradients: their second moments (and DyKAF's factors) are first built over
`warmup` training batches at lr 0, and their Δ has no momentum: Adam's is ∇L ⊘ (sqrt(v̂) + eps). 'ng' is the
damped natural gradient (F + λ I)⁻¹ ∇L on the same layers, by ng_iters conjugate-gradient steps on Fisher-vector
products preconditioned with Fixed Fisher's (A⊗G + λI)⁻¹; the residual is printed. Converged or not, no direction
has a smaller γ than the undamped natural gradient, so 'ng' bounds that minimum from above. (The block-diagonal
natural gradient, a solve per layer, is not done.)

damping_mode 'relative' (default) makes λ scale-free: the Kronecker methods take their own damping_mode='relative'
(λ times the layer's mean eigenvalue of A⊗G, for EKFAC of its s, for EVA of its rank-one Fisher), 'ng' the same per
layer as Fixed Fisher, iEF λ tr(JJᵀ)/N, AdamW and DyKAF eps = sqrt(λ mean(∇L²)). 'absolute' passes λ as it is
(eps = sqrt(λ)). Prints a table per checkpoint, saves the plot (γ/γ_SGD against λ, one line per method) and the
numbers beside it (.json).
"""

import copy
import inspect
import io
import json
import math
import os
from contextlib import redirect_stdout

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp, vjp
from torch.nn.attention import SDPBackend, sdpa_kernel

from checkpoint import load_checkpoint
from model import GPT, GPTConfig
from optim import OPTIMIZERS, build_optimizer
from optim.capture import split_layers

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
# -----------------------------------------------------------------------------
ckpts = ''  # comma-separated: training runs' out_dirs (their ckpt.pt) or checkpoint files
methods = 'sgd,adamw,kfac,eva,fixed_fisher,ekfac,ief,ief_tokens,iekfac,kpsvd,kfac_corrected,dykaf,ng'
dampings = '1e-6,1e-5,1e-4,1e-3,1e-2,1e-1,1'  # comma-separated λ
damping_mode = 'relative'  # 'relative' (scale-free, see above) or 'absolute'
split = 'val'  # the split the batch is drawn from
batch_size = 0  # sequences in the batch; 0 takes the checkpoint's batch_size
seed = 1337  # draws the batch and the warm-up batches
warmup = 10  # training batches at lr 0 that build AdamW's and DyKAF's second moments and DyKAF's factors
fisher = 'empirical'  # the Kronecker methods' factors: 'empirical' or 'sampled' (iEF is always empirical)
ng_iters = 30  # preconditioned conjugate-gradient iterations at most for 'ng' (each one JVP and one VJP)
ng_tol = 1e-2  # ... until the residual is this fraction of ||∇L||
out = 'fisher_quality.png'  # the plot; the numbers go to the same name with .json
device = 'cpu'
dtype = 'float32'  # 'float64' for exact arithmetic (slower)
config_keys = [k for k, v in globals().items() if not k.startswith('_') and (v is None or type(v) in (int, float, bool, str))]
config_keys.remove('here')
if __name__ == '__main__':  # (tests import this file for its functions)
    exec(open(os.path.join(here, 'configurator.py')).read())  # overrides from the command line or a config file
# -----------------------------------------------------------------------------
CONTRACT = dict(lr=1.0, momentum=0.0, weight_decay=0.0, kl_clip=None, factor_decay=0.0, factor_update_freq=1,
                inv_update_freq=1, adamw_lr_scale=0.0)
VARIANTS = {'ief_tokens': ('ief', dict(samples='tokens'))}  # name: (optimizer, its extra arguments)


def batches(model_cfg, train_cfg, split, n, key):
    """n batches of (X, Y) from the checkpoint's dataset, drawn by (seed, key)."""
    data_dir = train_cfg.get('data_dir') or os.path.join(here, 'data', train_cfg['dataset'])
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
    T, B = model_cfg['block_size'], batch_size or train_cfg['batch_size']
    gen = torch.Generator().manual_seed(seed + key)
    out = []
    for _ in range(n):
        ix = torch.randint(len(data) - T, (B,), generator=gen)
        x = torch.from_numpy(np.stack([data[i:i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1:i + 1 + T] for i in ix]).astype(np.int64))
        out.append((x.to(device), y.to(device)))
    return out


class Fisher:
    """At the model's weights and a batch (X, Y), for the parameters named in `names`: ∇L, Fisher-vector products
    F v = (1/M) Σ_m J_mᵀ H_m J_m v with H_m = diag(p_m) − p_m p_mᵀ, quad(v) = vᵀ F v, and γ."""

    def __init__(self, model, X, Y, names):
        params = {n: p.detach() for n, p in model.named_parameters()}
        self.primal = {n: params[n] for n in names}
        self.logits_of = lambda p: functional_call(model, {**params, **p}, (X, Y))[0]  # (B, T, V)
        logits, self.vjp_fn = vjp(self.logits_of, self.primal)
        self.p = F.softmax(logits.detach(), -1)
        self.M = Y.numel()
        self.grad = self.vjp_fn((self.p - F.one_hot(Y, self.p.shape[-1]).to(self.p.dtype)) / self.M)[0]

    def _hessian(self, v):
        with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no forward-mode derivative
            u = jvp(self.logits_of, (self.primal,), (v,))[1]  # J v, (B, T, V)
        return u, self.p * u - self.p * (self.p * u).sum(-1, keepdim=True)  # H J v

    def quad(self, v):
        u, Hu = self._hessian(v)
        return (u * Hu).sum() / self.M

    def mvp(self, v):
        return self.vjp_fn(self._hessian(v)[1] / self.M)[0]

    def gamma(self, delta):
        return (self.quad(delta).clamp_min(0).sqrt() / dot(delta, self.grad).abs()).item()


def dot(u, v):
    return sum((u[k] * v[k]).sum() for k in u)


def cg(mvp, b, x, iters, tol, precond=lambda r: r):
    """Preconditioned conjugate gradients for mvp(x) = b (dicts of tensors) from x, precond(r) ~ mvp^-1(r);
    returns (x, iterations, relative residual)."""
    r = {k: b[k] - v for k, v in mvp(x).items()}
    z = precond(r)
    p, rz, bb = dict(z), dot(r, z), dot(b, b)
    for i in range(iters + 1):
        rr = dot(r, r)
        if rr <= tol ** 2 * bb or i == iters:
            return x, i, (rr / bb).sqrt().item()
        Ap = mvp(p)
        alpha = rz / dot(p, Ap)
        x = {k: x[k] + alpha * p[k] for k in x}
        r = {k: r[k] - alpha * Ap[k] for k in r}
        z = precond(r)
        rz, rz_old = dot(r, z), rz
        p = {k: z[k] + (rz / rz_old) * p[k] for k in p}


def kronecker_preconditioner(opt, names):
    """v -> (A (x) G + lambda_l I)^-1 v per layer, from a FixedFisher that has stepped ([W | b] as one matrix)."""
    def apply(v):
        out = {}
        for layer, st in opt.layer_state.items():
            w, b = f'{layer}.weight', f'{layer}.bias'
            V = torch.cat([v[w], v[b][:, None]], 1) if b in v else v[w]
            U = opt.precondition(st, V.to(st['A'].dtype)).to(V.dtype)
            out[w] = U[:, :v[w].shape[1]]
            if b in v:
                out[b] = U[:, -1]
        return out
    return apply


def quiet_optimizer(name, model, **cfg):
    """build_optimizer with the keyword arguments the optimizer takes, its construction log swallowed."""
    params = inspect.signature(OPTIMIZERS[name]).parameters
    with redirect_stdout(io.StringIO()):
        return build_optimizer(name, model, **{k: v for k, v in cfg.items() if k in params})


def one_step(opt, model, X, Y, names):
    """Δ = W_before − W_after of one optimizer step on (X, Y), for the parameters in names; weights restored."""
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    torch.manual_seed(seed)  # the sampled Fisher's labels
    logits, loss = model(X, Y)
    opt.backward(loss, logits)
    opt.step()
    opt.zero_grad(set_to_none=True)
    delta = {n: before[n] - params[n].detach() for n in names}
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(before[n])
    return delta


def evaluate(path):
    """{method: [γ/γ_SGD for each damping]} at one checkpoint, and the checkpoint's iteration."""
    checkpoint = load_checkpoint(path if path.endswith('.pt') else os.path.join(path, 'ckpt.pt'), map_location=device)
    model_cfg, train_cfg = dict(checkpoint['model_args'], dropout=0.0), checkpoint['config']
    model = GPT(GPTConfig(**model_cfg))
    model.load_state_dict(checkpoint['model'])
    model.to(device=device, dtype=getattr(torch, dtype)).train()  # train mode: the optimizers' hooks record
    layers, _ = split_layers(model, '', 8192)
    names = [f'{n}.{k}' for n, m in layers.items() for k, _ in m.named_parameters()]
    (X, Y), = batches(model_cfg, train_cfg, split, 1, 0)
    warm = batches(model_cfg, train_cfg, 'train', warmup, 1)
    fisher_ = Fisher(model, X, Y, names)
    g = fisher_.grad
    g_rms = dot(g, g).div(sum(t.numel() for t in g.values())).sqrt().item()
    gamma_sgd = fisher_.gamma(g)
    lams = [float(x) for x in dampings.split(',')]
    eps_of = (lambda lam: math.sqrt(lam) * g_rms) if damping_mode == 'relative' else (lambda lam: math.sqrt(lam))
    beta2 = train_cfg.get('beta2', 0.95)
    results = {}
    print(f"  {'λ':15s} " + ' '.join(f'{lam:>8g}' for lam in lams))
    for name in [m.strip() for m in methods.split(',') if m.strip()]:
        ratios = []
        if name == 'sgd':
            ratios = [1.0] * len(lams)
        elif name == 'adamw':  # the RMS-normalised gradient: v over the warm-up batches and this one, bias-corrected
            v = {n: torch.zeros_like(t) for n, t in g.items()}
            params = dict(model.named_parameters())
            for k, (Xw, Yw) in enumerate(warm + [(X, Y)]):
                model.zero_grad(set_to_none=True)
                model(Xw, Yw)[1].backward()
                for n in names:
                    v[n].lerp_(params[n].grad.square(), 1 - beta2)
            model.zero_grad(set_to_none=True)
            v_hat = {n: t / (1 - beta2 ** (len(warm) + 1)) for n, t in v.items()}
            ratios = [fisher_.gamma({n: g[n] / (v_hat[n].sqrt() + eps_of(lam)) for n in names}) / gamma_sgd
                      for lam in lams]
        elif name == 'dykaf':
            opt = quiet_optimizer('dykaf', model, **dict(CONTRACT, lr=0.0, beta1=0.0, beta2=beta2,
                                                         factor_decay=0.95))
            for Xw, Yw in warm:
                one_step(opt, model, Xw, Yw, names)
            state = copy.deepcopy(opt.state_dict())
            for lam in lams:
                opt.load_state_dict(copy.deepcopy(state))
                for group in opt.param_groups:
                    group['lr'] = 1.0
                opt.eps = eps_of(lam)
                ratios.append(fisher_.gamma(one_step(opt, model, X, Y, names)) / gamma_sgd)  # DyKAF has no hooks
            del opt
        elif name == 'ng':  # (F + D) x = ∇L, D = λ_l per layer as Fixed Fisher's, preconditioned by Fixed Fisher
            x, solved = {n: torch.zeros_like(t) for n, t in g.items()}, {}
            for lam in sorted(lams, reverse=True):  # each solve starts from the last, more damped one
                ff = quiet_optimizer('fixed_fisher', model, **dict(CONTRACT, lr=0.0, damping=lam,
                                                                     damping_mode=damping_mode, fisher=fisher))
                one_step(ff, model, X, Y, names)
                ff.capture.disarm()  # its hooks would record the Fisher's forwards
                damp = {n: float(ff.damping_for(st['s_A'].mean(), st['s_G'].mean()))
                        for layer, st in ff.layer_state.items() for n in names if n.rsplit('.', 1)[0] == layer}
                x, iters, res = cg(lambda v: {n: t + damp[n] * v[n] for n, t in fisher_.mvp(v).items()}, g, x,
                                   ng_iters, ng_tol, kronecker_preconditioner(ff, names))
                del ff
                print(f"  ng: λ={lam:g}: {iters} CG iterations, residual {res:.1e}")
                solved[lam] = fisher_.gamma(x) / gamma_sgd
            ratios = [solved[lam] for lam in lams]
        else:
            optimizer, extra = VARIANTS.get(name, (name, {}))
            for lam in lams:
                opt = quiet_optimizer(optimizer, model, **dict(CONTRACT, damping=lam, damping_mode=damping_mode,
                                                               fisher=fisher if optimizer != 'ief' else 'empirical',
                                                               **extra))
                delta = one_step(opt, model, X, Y, names)
                del opt  # its hooks go with it, before the Fisher's own forwards
                ratios.append(fisher_.gamma(delta) / gamma_sgd)
        results[name] = ratios
        print(f"  {name:15s} " + ' '.join(f'{r:8.4f}' for r in ratios))
    return results, checkpoint['iter_num'], lams


def plot(all_results, lams, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(all_results), figsize=(4.5 * len(all_results) + 1.5, 4.2), squeeze=False)
    colors = plt.get_cmap('tab20').colors
    for ax, (label, results) in zip(axes[0], all_results.items()):
        for k, (name, ratios) in enumerate(results.items()):
            ax.plot(lams, ratios, marker='os^vD'[k % 5], ms=3, color=colors[k % len(colors)], label=name,
                    ls='--' if name in ('sgd', 'ng') else '-')
        ax.set(xscale='log', yscale='log', xlabel=f'damping λ ({damping_mode})', title=label)
        ax.grid(True, which='both', alpha=0.3)
    axes[0][0].set_ylabel('γ(Δ) / γ(∇L)   (below 1 beats SGD)')
    axes[0][-1].legend(fontsize=8, loc='center left', bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    if not ckpts:
        raise ValueError("name the checkpoints: --ckpts=out_dir_a,out_dir_b (training runs' out_dirs or .pt files)")
    torch.manual_seed(seed)
    all_results, lams = {}, None
    for path in ckpts.split(','):
        print(f"{path}:")
        results, iter_num, lams = evaluate(path)
        all_results[f'{os.path.basename(path.rstrip("/"))} (iter {iter_num})'] = results
    print(f"\nγ(Δ)/γ(∇L) at the best damping of each method (its λ), damping_mode={damping_mode}:")
    labels = list(all_results)
    print(f"{'method':15s}" + ''.join(f'{label:>28s}' for label in labels))
    for name in next(iter(all_results.values())):
        cells = []
        for label in labels:
            ratios = all_results[label][name]
            k = min(range(len(ratios)), key=lambda i: ratios[i])
            cells.append(f'{ratios[k]:.4f} ({lams[k]:g})')
        print(f"{name:15s}" + ''.join(f'{c:>28s}' for c in cells))
    plot(all_results, lams, out)
    with open(os.path.splitext(out)[0] + '.json', 'w') as f:
        json.dump(dict(dampings=lams, damping_mode=damping_mode, results=all_results), f, indent=1)
    print(f"saved {out} and {os.path.splitext(out)[0]}.json")
