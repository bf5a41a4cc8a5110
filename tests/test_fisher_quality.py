"""
benchmarks/fisher_quality.py on a tiny GPT in float64: the JVP-based Fisher against the explicit GGN J^T H J / M, conjugate
gradients against a dense solve, the natural gradient's gamma the smallest of every direction tried (each
optimizer's, SGD's, random ones) and equal to 1/sqrt(g^T F^+ g), and a run of the script's evaluation on a tiny
checkpoint.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks import fisher_quality as fq
from checkpoint import save_checkpoint
from model import GPT, GPTConfig
from optim.kronecker import split_layers

V = 7


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=4, vocab_size=V, n_layer=1, n_head=1, n_embd=4)).double()


def setup():
    gpt = tiny_gpt()
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randint(0, V, (2, 4), generator=g), torch.randint(0, V, (2, 4), generator=g)
    layers, _ = split_layers(gpt, '', 8192)
    names = [f'{n}.{k}' for n, m in layers.items() for k, _ in m.named_parameters()]
    return gpt, X, Y, names


def explicit_fisher(gpt, X, Y, names):
    """F = (1/M) sum_m J_m^T (diag(p_m) - p_m p_m^T) J_m from the full Jacobian of the logits (jacrev)."""
    params = {n: p.detach() for n, p in gpt.named_parameters()}
    primal = {n: params[n] for n in names}
    logits_of = lambda p: functional_call(gpt, {**params, **p}, (X, Y))[0].reshape(-1, V)  # noqa: E731
    with sdpa_kernel(SDPBackend.MATH):  # vmap has no batching rule for the fused kernel's backward
        jac = jacrev(logits_of)(primal)
    J = torch.cat([jac[n].reshape(Y.numel(), V, -1) for n in names], 2)  # (M, V, P)
    p = F.softmax(logits_of(primal), -1)
    H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (M, V, V)
    return torch.einsum('mvp,mvw,mwq->pq', J, H, J) / Y.numel()


def flat(d, names):
    return torch.cat([d[n].reshape(-1) for n in names])


def unflat(x, like, names):
    out, i = {}, 0
    for n in names:
        out[n] = x[i:i + like[n].numel()].reshape(like[n].shape)
        i += like[n].numel()
    return out


def test_jvp_fisher_equals_explicit_ggn():
    gpt, X, Y, names = setup()
    fisher = fq.Fisher(gpt, X, Y, names)
    Fx = explicit_fisher(gpt, X, Y, names)
    gpt.zero_grad()
    gpt(X, Y)[1].backward()
    params = dict(gpt.named_parameters())
    torch.testing.assert_close(flat(fisher.grad, names), flat({n: params[n].grad for n in names}, names))
    v = torch.randn(Fx.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    vd = unflat(v, fisher.grad, names)
    torch.testing.assert_close(fisher.quad(vd), v @ Fx @ v, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(flat(fisher.mvp(vd), names), Fx @ v, rtol=1e-10, atol=1e-14)


def test_conjugate_gradients_solve_the_damped_system():
    """Plain, and preconditioned with Fixed Fisher's (A (x) G + lambda I)^-1 as 'ng' does: the same solution (the
    preconditioner halves the iterations that a trained model needs for a given gamma, not on this random one)."""
    gpt, X, Y, names = setup()
    fisher = fq.Fisher(gpt, X, Y, names)
    Fx, g, lam = explicit_fisher(gpt, X, Y, names), flat(fisher.grad, names), 1e-3
    exact = torch.linalg.solve(Fx + lam * torch.eye(len(g), dtype=g.dtype), g)
    ff = fq.quiet_optimizer('fixed_fisher', gpt, **dict(fq.CONTRACT, lr=0.0, damping=lam))
    fq.one_step(ff, gpt, X, Y, names)
    ff.capture.disarm()
    for precond in (lambda r: r, fq.kronecker_preconditioner(ff, names)):
        x0 = {n: torch.zeros_like(t) for n, t in fisher.grad.items()}
        x, iters, res = fq.cg(lambda v: {n: t + lam * v[n] for n, t in fisher.mvp(v).items()}, fisher.grad, x0,
                              500, 1e-10, precond)
        assert res <= 1e-10
        torch.testing.assert_close(flat(x, names), exact, rtol=1e-5, atol=1e-9)


def test_natural_gradient_has_the_smallest_gamma():
    gpt, X, Y, names = setup()
    fisher = fq.Fisher(gpt, X, Y, names)
    Fx, g = explicit_fisher(gpt, X, Y, names), flat(fisher.grad, names)
    ng = torch.linalg.solve(Fx + 1e-9 * Fx.diagonal().mean() * torch.eye(len(g), dtype=g.dtype), g)
    gamma_ng = fisher.gamma(unflat(ng, fisher.grad, names))
    torch.testing.assert_close(gamma_ng, (g @ torch.linalg.pinv(Fx, hermitian=True) @ g).rsqrt().item(), rtol=1e-4,
                               atol=0)  # the Cauchy-Schwarz bound, reached
    tried = {'sgd': fisher.grad}
    for name in ['kfac', 'eva', 'fixed_fisher', 'ekfac', 'ief', 'iekfac', 'kpsvd', 'kfac_corrected']:
        for lam in (1e-3, 1e-1):
            opt = fq.quiet_optimizer(name, gpt, **dict(fq.CONTRACT, damping=lam, damping_mode='relative'))
            tried[f'{name}@{lam:g}'] = fq.one_step(opt, gpt, X, Y, names)
            del opt
    gen = torch.Generator().manual_seed(2)
    for k in range(10):
        tried[f'random{k}'] = unflat(torch.randn(len(g), dtype=g.dtype, generator=gen), fisher.grad, names)
    gammas = {k: fisher.gamma(d) for k, d in tried.items()}
    assert all(gamma_ng <= gamma * (1 + 1e-9) for gamma in gammas.values()), (gamma_ng, gammas)
    assert gammas['fixed_fisher@0.001'] < gammas['sgd']  # and the Kronecker methods beat SGD here


def test_evaluation_runs_on_a_tiny_checkpoint(tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        rng.integers(0, V, 500).astype(np.uint16).tofile(data / f'{split}.bin')
    gpt = tiny_gpt().float()
    model_args = dict(block_size=4, vocab_size=V, n_layer=1, n_head=1, n_embd=4, bias=True, dropout=0.0,
                      attention='softmax')
    save_checkpoint(dict(model=gpt.state_dict(), optimizer={}, model_args=model_args, iter_num=7, best_val_loss=1.0,
                         config=dict(dataset='tiny', data_dir=str(data), batch_size=3, beta2=0.99)),
                    str(tmp_path / 'ckpt.pt'))
    fq.methods, fq.dampings, fq.warmup, fq.ng_iters = 'sgd,adamw,fixed_fisher,ief,dykaf,ng', '1e-3,1e-1', 2, 10
    results, iter_num, lams = fq.evaluate(str(tmp_path))
    assert iter_num == 7 and lams == [1e-3, 1e-1] and set(results) == set(fq.methods.split(','))
    assert results['sgd'] == [1.0, 1.0]
    assert all(np.isfinite(r) and r > 0 for ratios in results.values() for r in ratios)
    assert min(results['ng']) < 1  # the natural gradient beats SGD
    fq.plot({'tiny': results}, lams, str(tmp_path / 'fq.png'))
    assert os.path.getsize(tmp_path / 'fq.png') > 0
