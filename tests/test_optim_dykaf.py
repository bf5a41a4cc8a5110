"""
DyKAF (optim/dykaf.py): one factor update against the textbook projector-splitting (K, S, L) step on explicit
rearranged matrices; over many steps L (x) R tracks the nearest Kronecker product of the explicit running Fisher;
the optimizer's factors follow ksl_step on its gradients; the first two updates against their formulas; exact
resume; a short run with either second moment.
"""

import io

import pytest
import torch

from optim import build_optimizer
from optim.dykaf import ksl_step
from test_optim_kronecker import batch, tiny_gpt, train_step  # the tiny GPT and helpers the optimizer tests share


def rearranged(F, d_in, d_out):
    """R(F) with R(R (x) L) = vec(R) vec(L)^T for torch.kron(R, L) (F = E[vec(V) vec(V)^T], vec stacking columns)."""
    return F.reshape(d_in, d_out, d_in, d_out).permute(0, 2, 1, 3).reshape(d_in * d_in, d_out * d_out)


def psd(d, seed):
    X = torch.randn(d, d + 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return X @ X.T


def test_ksl_step_is_the_projector_splitting_step_on_explicit_matrices():
    """Lubich & Oseledets (2014): Y0 = U0 S0 V0^T, increment D = Y1 - Y0 with Y1 = decay Y0 + (1 - decay) X;
    K = U0 S0 + D V0 -> QR -> U1, S^;  S~ = S^ - U1^T D V0;  L = V0 S~^T + D^T U1 -> QR -> V1, S1^T."""
    d_out, d_in, decay = 3, 4, 0.8
    V = torch.randn(d_out, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    L, R = psd(d_out, 1), psd(d_in, 2)
    L = L / L.norm()
    L1, R1 = ksl_step(L, R, V, decay)

    vec = torch.cat([V[:, j] for j in range(d_in)])  # columns stacked
    F_new = torch.outer(vec, vec)
    X = rearranged(F_new, d_in, d_out).T  # rows: L's entries, columns: R's
    s0 = R.norm()
    U0, S0, V0 = L.reshape(-1, 1), s0.reshape(1, 1), (R / s0).reshape(-1, 1)
    Y0 = U0 @ S0 @ V0.T
    D = decay * Y0 + (1 - decay) * X - Y0
    U1, S_hat = torch.linalg.qr(U0 @ S0 + D @ V0)
    S_tilde = S_hat - U1.T @ D @ V0
    V1, S1t = torch.linalg.qr(V0 @ S_tilde.T + D.T @ U1)
    torch.testing.assert_close(torch.outer(L1.reshape(-1), R1.reshape(-1)), U1 @ S1t.T @ V1.T, rtol=1e-10,
                               atol=1e-14)
    # and in Kronecker form: ||F - R (x) L|| is the distance of the rearranged matrices
    torch.testing.assert_close((F_new - torch.kron(R1, L1)).norm(), (X - torch.outer(L1.reshape(-1),
                                                                                      R1.reshape(-1))).norm())


def test_factors_track_the_nearest_kronecker_product_of_the_running_fisher():
    torch.manual_seed(0)
    d_out, d_in, decay = 3, 4, 0.95
    P, Q = torch.randn(d_out, d_out, dtype=torch.float64), torch.randn(d_in, d_in, dtype=torch.float64)
    ratios = []
    for t in range(200):
        V = P @ torch.randn(d_out, d_in, dtype=torch.float64) @ Q + 0.3 * torch.randn(d_out, d_in, dtype=torch.float64)
        vec = V.T.reshape(-1)
        if t == 0:
            F = torch.outer(vec, vec)
            L, R = ksl_step((V @ V.T) / (V @ V.T).norm(), (V.T @ V) / (V.T @ V).norm(), V, 0.0)
        else:
            F = decay * F + (1 - decay) * torch.outer(vec, vec)
            L, R = ksl_step(L, R, V, decay)
        sv = torch.linalg.svdvals(rearranged(F, d_in, d_out))
        ratios.append((F - torch.kron(R, L)).norm() / (F.square().sum() - sv[0] ** 2).sqrt())
    ratios = torch.stack(ratios[50:])
    assert ratios.mean() < 1.03 and ratios.max() < 1.1, (ratios.mean(), ratios.max())


def test_optimizer_factors_follow_ksl_step_on_its_gradients():
    gpt = tiny_gpt()
    opt = build_optimizer('dykaf', gpt, lr=0.01, factor_decay=0.9, factor_update_freq=1)
    layer, name = gpt.transformer.h[0].mlp.c_fc, 'transformer.h.0.mlp.c_fc'
    L = R = None
    for k in range(3):
        logits, loss = gpt(*batch(k))
        opt.backward(loss, logits)
        V = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).clone()
        opt.step()
        opt.zero_grad()
        L, R = ksl_step((V @ V.T) / (V @ V.T).norm(), (V.T @ V) / (V.T @ V).norm(), V, 0.0) if k == 0 else \
            ksl_step(L, R, V, 0.9)
        A, G = opt.factors()[name]
        torch.testing.assert_close(A, R, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(G, L, rtol=1e-10, atol=1e-14)


def test_first_step_initialises_and_second_is_adam_in_the_eigenbasis():
    gpt = tiny_gpt()
    lr, eps = 0.05, 1e-8
    opt = build_optimizer('dykaf', gpt, lr=lr, weight_decay=0.0, eps=eps, adamw_lr_scale=0.0)
    layer, name = gpt.transformer.h[0].attn.c_proj, 'transformer.h.0.attn.c_proj'
    W0 = torch.cat([layer.weight, layer.bias[:, None]], 1).detach().clone()
    train_step(opt, gpt, *batch(0))
    W1 = torch.cat([layer.weight, layer.bias[:, None]], 1).detach().clone()
    assert torch.equal(W0, W1)  # no update on the first step
    st = opt.layer_state[name]
    Q_L, Q_R = st['Q_L'].clone(), st['Q_R'].clone()
    torch.testing.assert_close(Q_L @ torch.diag(st['s_L']) @ Q_L.T, st['L'])  # eigh of the first factors
    logits, loss = gpt(*batch(1))
    opt.backward(loss, logits)
    V = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).clone()
    opt.step()
    Vp = Q_L.T @ V @ Q_R  # t = 1: m^ = V, v^ = V'^2
    U = Q_L @ (Vp / (Vp.abs() + eps)) @ Q_R.T
    torch.testing.assert_close(torch.cat([layer.weight, layer.bias[:, None]], 1).detach() - W1, -lr * U, rtol=1e-8,
                               atol=1e-12)


def test_resume_from_state_dict_is_exact():
    cfg = dict(lr=0.01, inv_update_freq=2, second_moment='factored', grafting='adam')
    gpt = tiny_gpt()
    opt = build_optimizer('dykaf', gpt, **cfg)
    for k in range(3):
        train_step(opt, gpt, *batch(k))
    buffer = io.BytesIO()
    torch.save({'model': gpt.state_dict(), 'optimizer': opt.state_dict()}, buffer)
    for k in range(3, 6):
        train_step(opt, gpt, *batch(k))
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = tiny_gpt(seed=1)
    resumed.load_state_dict(checkpoint['model'])
    opt2 = build_optimizer('dykaf', resumed, **cfg)
    opt2.load_state_dict(checkpoint['optimizer'])
    for k in range(3, 6):
        train_step(opt2, resumed, *batch(k))
    for (n, p), p2 in zip(gpt.named_parameters(), resumed.parameters()):
        assert torch.equal(p, p2), n


def test_bad_second_moment_is_a_clear_error():
    with pytest.raises(ValueError, match='second_moment'):
        build_optimizer('dykaf', tiny_gpt(), second_moment='diagonal')
    with pytest.raises(TypeError, match='momentum'):  # a shared knob DyKAF lists as unused is refused, not ignored
        build_optimizer('dykaf', tiny_gpt(), momentum=0.9)


@pytest.mark.parametrize('second_moment', ['full', 'factored'])
def test_short_run_trains(second_moment):
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer('dykaf', gpt, lr=0.01, weight_decay=0.0, inv_update_freq=3, second_moment=second_moment)
    losses = [train_step(opt, gpt, X, Y) for _ in range(25)]
    assert losses[-1] < losses[0] - 0.3
    assert len(gpt.transformer.h[0].mlp.c_fc._forward_hooks) == 0  # factors come from the gradient: no hooks
