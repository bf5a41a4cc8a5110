"""
KPSVD and KFAC-corrected (optim/kpsvd.py): on a small layer, the Kronecker pair is Frobenius-optimal (the SVD of the
explicitly rearranged Fisher block) and never worse than KFAC's; the correction is optimal for KFAC's residual; the
step contract of DESIGN.md against dense solves; warm starts; a short run.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from optim import build_optimizer
from optim.kpsvd import nearest_kronecker
from test_optim_kronecker import augmented, batch, tiny_gpt  # the tiny GPT and helpers the optimizer tests share

CONTRACT = dict(momentum=0.0, weight_decay=0.0, kl_clip=None, factor_decay=0.0, factor_update_freq=1,
                inv_update_freq=1, power_tol=1e-10, power_iters=500)


def rearranged(F, da, dg):
    """R(F) with R(A (x) G) = vec(A) vec(G)^T (torch.kron's layout: F[i dg + k, j dg + l] = A_ij G_kl)."""
    return F.reshape(da, dg, da, dg).permute(0, 2, 1, 3).reshape(da * da, dg * dg)


def one_layer_fisher(name, seed=0):
    """A small layer's step: the optimizer's factors and the explicit Fisher block (1/M) sum_m vec(G_m) vec(G_m)^T
    from per-token gradients G_m by torch.func (vec stacking columns)."""
    from torch.func import functional_call, grad, vmap
    torch.manual_seed(seed)
    layer = nn.Linear(4, 3).double()
    X, Y = torch.randn(2, 9, 4, dtype=torch.float64), torch.randint(0, 3, (2, 9))
    params = {k: v.detach() for k, v in layer.named_parameters()}
    per = vmap(grad(lambda p, x, y: F.cross_entropy(functional_call(layer, p, (x[None],)), y[None])),
               in_dims=(None, 0, 0))(params, X.reshape(-1, 4), Y.reshape(-1))
    vecs = torch.cat([per['weight'], per['bias'][:, :, None]], 2).transpose(1, 2).reshape(X.shape[0] * 9, -1)
    cfg = CONTRACT if name != 'kfac' else {k: v for k, v in CONTRACT.items() if not k.startswith('power')}
    opt = build_optimizer(name, layer, lr=0.0, **cfg)
    logits = layer(X)
    opt.backward(F.cross_entropy(logits.reshape(-1, 3), Y.reshape(-1)), logits)
    opt.step()
    return opt, vecs.T @ vecs / vecs.shape[0]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_kpsvd_pair_is_the_frobenius_optimum_and_beats_kfac(seed):
    opt, F_block = one_layer_fisher('kpsvd', seed)
    A, G = opt.factors()['']
    sv = torch.linalg.svdvals(rearranged(F_block, 5, 3))
    optimum = (F_block.square().sum() - sv[0] ** 2).sqrt()
    error = (F_block - torch.kron(A, G)).norm()
    torch.testing.assert_close(error, optimum, rtol=1e-8, atol=0)
    kfac, _ = one_layer_fisher('kfac', seed)
    A_K, G_K = kfac.factors()['']
    assert error <= (F_block - torch.kron(A_K, G_K)).norm()
    torch.testing.assert_close(A.trace(), A_K.trace())  # the split keeps A on KFAC's scale
    assert torch.linalg.eigvalsh(A).min() > -1e-12 and torch.linalg.eigvalsh(G).min() > -1e-12


def test_kfac_corrected_term_is_optimal_for_kfacs_residual():
    opt, F_block = one_layer_fisher('kfac_corrected')
    st = opt.layer_state['']
    residual = F_block - torch.kron(st['A'], st['G'])
    sv = torch.linalg.svdvals(rearranged(residual, 5, 3))
    error = (residual - torch.kron(st['A2'], st['G2'])).norm()
    torch.testing.assert_close(error, (residual.square().sum() - sv[0] ** 2).sqrt(), rtol=1e-8, atol=0)
    assert error < residual.norm()


def test_power_iteration_warm_start_needs_fewer_iterations():
    torch.manual_seed(0)
    a, g = torch.randn(50, 6, dtype=torch.float64), torch.randn(50, 4, dtype=torch.float64)
    G0 = g.T @ g
    sigma, U, V, cold = nearest_kronecker(a, g, G0, 1e-10, 500)
    *_, warm = nearest_kronecker(a + 0.01 * torch.randn_like(a), g, V, 1e-10, 500)
    assert warm < cold


@pytest.mark.parametrize('name', ['kpsvd', 'kfac_corrected'])
def test_step_is_minus_lr_times_the_damped_inverse(name):
    gpt, (X, Y) = tiny_gpt(), batch(0)
    lr, damping = 0.05, 1e-2
    opt = build_optimizer(name, gpt, lr=lr, damping=damping, **CONTRACT)
    logits, loss = gpt(X, Y)
    opt.backward(loss, logits)
    layers = {n: gpt.get_submodule(n) for n in opt.modules_}
    before = {n: (augmented(m), augmented(m, use_grad=True)) for n, m in layers.items()}
    opt.step()
    for n, st in opt.layer_state.items():
        W0, V = before[n]
        A, G = st['A'], st['G']
        eye = lambda d: torch.eye(d, dtype=A.dtype)  # noqa: E731
        if name == 'kpsvd':
            dense = torch.kron(A, G) + damping * eye(A.shape[0] * G.shape[0])
        else:
            assert (1 + st['d_G'][:, None] * st['d_A'][None, :]).min() > 0.1  # no clamping here
            a, g = A.trace() / A.shape[0], G.trace() / G.shape[0]
            pi = (a / g).sqrt()
            dense = torch.kron(A + pi * damping ** 0.5 * eye(A.shape[0]), G + damping ** 0.5 / pi * eye(G.shape[0])) \
                + torch.kron(st['A2'], st['G2'])
        U = torch.linalg.solve(dense, V.T.reshape(-1)).reshape(V.shape[1], V.shape[0]).T
        torch.testing.assert_close(augmented(layers[n]) - W0, -lr * U, rtol=1e-7, atol=1e-12,
                                   msg=lambda m: f'{n}: {m}')


@pytest.mark.parametrize('name', ['kpsvd', 'kfac_corrected'])
def test_short_run_trains(name):
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer(name, gpt, lr=0.02, factor_update_freq=2, inv_update_freq=4, kl_clip=1e-2,
                          weight_decay=0.0)
    losses = []
    for _ in range(20):
        logits, loss = gpt(X, Y)
        opt.backward(loss, logits)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    assert opt.diagnostics()['kpsvd_iters'] >= 1
