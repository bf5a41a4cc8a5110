"""
The Kronecker optimizers' steps (optim/kfac.py, optim/fixed_fisher.py, optim/eva.py on optim/kronecker.py): the step
contract of DESIGN.md against dense torch.kron solves, KL clipping, grafting, momentum and weight decay, exact
resume from state_dict, the NaN guard, decomposition retries, bad input, and a short training run.
"""

import ast
import inspect
import io
import os

import pytest
import torch

from model import GPT, GPTConfig
from optim import OPTIMIZERS, build_optimizer, optimizer_kwargs
from optim.solves import qr_refresh
from optim.kronecker import KroneckerOptimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ['kfac', 'fixed_fisher', 'eva']
CONTRACT = dict(momentum=0.0, weight_decay=0.0, kl_clip=None, factor_decay=0.0, factor_update_freq=1,
                inv_update_freq=1)


def tiny_gpt(seed=0, n_layer=1):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=n_layer, n_head=2, n_embd=8)).double()


def batch(seed, B=3, T=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 13, (B, T), generator=g), torch.randint(0, 13, (B, T), generator=g)


def train_step(opt, model, X, Y, poison=None):
    logits, loss = model(X, Y)
    opt.backward(loss, logits)
    if poison is not None:
        poison()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def augmented(module, use_grad=False):
    """[W | b] of an nn.Linear, or its gradient."""
    W, b = (module.weight.grad, module.bias.grad) if use_grad else (module.weight, module.bias)
    return torch.cat([W, b[:, None]], 1).detach().clone()


def dense_fisher(name, A, G, damping, mode, gamma=0.0):
    """The damped Fisher each method inverts, as a dense matrix acting on vec(V) (columns stacked); fixed_fisher with
    cross_terms = gamma: A (x) G + lambda I + gamma (beta A (x) I + alpha I (x) G), alpha = pi sqrt(lambda) = lambda/beta."""
    if name == 'eva':
        A, G = torch.outer(A, A), torch.outer(G, G)  # rank-one factors from the Kronecker vectors
    nA, nG = A.shape[0], G.shape[0]
    a, g = A.trace() / nA, G.trace() / nG
    lam = damping * a * g if mode == 'relative' else damping
    if name == 'kfac':
        pi = (a / g).sqrt()
        return torch.kron(A + pi * lam ** 0.5 * torch.eye(nA, dtype=A.dtype),
                          G + lam ** 0.5 / pi * torch.eye(nG, dtype=A.dtype))
    eye = lambda n: torch.eye(n, dtype=A.dtype)
    alpha, beta = (a / g).sqrt() * lam ** 0.5, lam ** 0.5 / (a / g).sqrt()
    return torch.kron(A, G) + lam * eye(nA * nG) + gamma * (beta * torch.kron(A, eye(nG)) + alpha * torch.kron(eye(nA), G))


def step_and_dense_solve(name, mode, lr=0.05, damping=3e-2, **kwargs):
    """(weight change, -lr (damped Fisher)^-1 vec(V), the dense damped Fisher) per layer, one contract step of a tiny
    float64 GPT."""
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer(name, gpt, lr=lr, damping=damping, damping_mode=mode, **CONTRACT, **kwargs)
    loss = gpt(X, Y)[1]
    loss.backward()
    layers = {n: gpt.get_submodule(n) for n in opt.modules_}
    before = {n: (augmented(m), augmented(m, use_grad=True)) for n, m in layers.items()}
    opt.step()
    out = {}
    for n, (A, G) in opt.factors().items():
        W0, V = before[n]
        F = dense_fisher(name, A, G, damping, mode, kwargs.get('cross_terms', 0.0))
        U = torch.linalg.solve(F, V.T.reshape(-1)).reshape(V.shape[1], V.shape[0]).T
        out[n] = (augmented(layers[n]) - W0, -lr * U, F)
    return out


@pytest.mark.parametrize('mode', ['absolute', 'relative'])
@pytest.mark.parametrize('gamma', [0.0, 0.5, 1.0])
def test_cross_terms_gamma_steps_by_the_dense_damped_inverse(gamma, mode):
    """fixed_fisher's cross_terms = gamma against a dense torch.kron solve of A (x) G + lambda I + gamma (beta A (x) I
    + alpha I (x) G): gamma = 0 is Fixed Fisher, 1 is KFAC's (A + alpha I) (x) (G + beta I)."""
    for n, (step, reference, _) in step_and_dense_solve('fixed_fisher', mode, cross_terms=gamma).items():
        torch.testing.assert_close(step, reference, rtol=1e-8, atol=1e-12, msg=lambda m: f'{n}: {m}')


def test_a_new_method_is_one_class_and_one_registry_line(monkeypatch):
    """README's example: an EigenbasisOptimizer subclass that writes only its denominator D = s_G s_A^T + lambda,
    registered by one line, steps by the dense (A (x) G + lambda I)^-1 (it is Fixed Fisher)."""
    from optim.eigenbasis import EigenbasisOptimizer

    class MyMethod(EigenbasisOptimizer):
        def denominator(self, st):
            lam = st['damping_eff'] = self.damping_for(st['s_A'].mean(), st['s_G'].mean())
            return torch.outer(st['s_G'], st['s_A']) + lam

    monkeypatch.setitem(OPTIMIZERS, 'my_method', MyMethod)
    assert 'eigen_refresh' in optimizer_kwargs('my_method', dict(eigen_refresh='qr', damping=0.1))
    ours, fixed = (step_and_dense_solve(name, 'relative') for name in ('my_method', 'fixed_fisher'))
    for n, (step, reference, _) in ours.items():
        torch.testing.assert_close(step, reference, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(step, fixed[n][0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize('mode', ['absolute', 'relative'])
def test_kfac_eigen_solve_equals_its_inverse_and_fixed_fisher_at_gamma_one(mode):
    """Three ways to KFAC's step, float64: kfac's inverses, kfac's eigenbasis solve, fixed_fisher with cross_terms=1;
    they agree to 1e-10, and kfac's to the dense (A + alpha I) (x) (G + beta I) solve."""
    steps = {(name, extra): step_and_dense_solve(name, mode, **dict([extra] if extra else []))
             for name, extra in [('kfac', None), ('kfac', ('solve', 'eigen')), ('fixed_fisher', ('cross_terms', 1.0))]}
    inverse = steps[('kfac', None)]
    for n, (step, reference, _) in inverse.items():
        torch.testing.assert_close(step, reference, rtol=1e-8, atol=1e-12)
        for other in steps.values():
            torch.testing.assert_close(other[n][0], step, rtol=1e-10, atol=1e-13, msg=lambda m: f'{n}: {m}')


@pytest.mark.parametrize('mode', ['absolute', 'relative'])
def test_kfac_cg_goes_from_kfac_to_fixed_fisher(mode):
    """solve='kfac_cg': 0 CG steps is KFAC's step; each step can only lower the error to the dense Fixed Fisher
    solve in the (A (x) G + lambda I)-norm (CG's optimality); enough steps reach it to float64 rounding."""
    kfac = step_and_dense_solve('kfac', mode)
    exact = step_and_dense_solve('fixed_fisher', mode)
    errors = {}
    for k in (0, 1, 2, 4, 8, 200):
        steps = step_and_dense_solve('fixed_fisher', mode, solve='kfac_cg', cg_steps=k)
        errors[k] = {}
        for n, (step, _, _) in steps.items():
            if k == 0:
                torch.testing.assert_close(step, kfac[n][0], rtol=1e-10, atol=1e-13)
            e = (step - exact[n][1]).T.reshape(-1)  # vec, columns stacked, as the dense Fisher acts
            errors[k][n] = float(e @ exact[n][2] @ e)
    for n in errors[0]:
        norms = [errors[k][n] for k in (0, 1, 2, 4, 8, 200)]
        assert all(b <= a * (1 + 1e-9) + 1e-30 for a, b in zip(norms, norms[1:])), (n, norms)
        assert norms[0] > 0 and norms[-1] <= 1e-20 * max(norms[0], 1e-300) + 1e-28, (n, norms)


def test_bad_cross_terms_and_solve_are_errors():
    with pytest.raises(ValueError, match='cross_terms'):
        build_optimizer('fixed_fisher', tiny_gpt(), cross_terms=1.5)
    with pytest.raises(ValueError, match='solve'):
        build_optimizer('kfac', tiny_gpt(), solve='cholesky')
    with pytest.raises(ValueError, match='solve'):
        build_optimizer('fixed_fisher', tiny_gpt(), solve='inverse')
    with pytest.raises(ValueError, match='cg_steps'):
        build_optimizer('fixed_fisher', tiny_gpt(), solve='kfac_cg', cg_steps=-1)
    with pytest.raises(ValueError, match='kfac_cg'):
        build_optimizer('fixed_fisher', tiny_gpt(), solve='kfac_cg', cross_terms=0.5)


@pytest.mark.parametrize('backward', ['optimizer', 'plain'])
@pytest.mark.parametrize('mode', ['absolute', 'relative'])
@pytest.mark.parametrize('name', METHODS)
def test_step_is_minus_lr_times_the_damped_inverse(name, mode, backward):
    """DESIGN.md: momentum 0, no weight decay or KL clip, factor_decay 0, frequencies 1: each preconditioned weight
    (bias as the last column) moves by exactly -lr (damped Fisher)^-1 vec(V), from this step's factors, after
    optimizer.backward(loss, logits) or a plain loss.backward() (drop-in, tests/test_plain_backward.py)."""
    gpt, (X, Y) = tiny_gpt(), batch(0)
    lr, damping = 0.05, 1e-2 if mode == 'absolute' else 3e-2
    opt = build_optimizer(name, gpt, lr=lr, damping=damping, damping_mode=mode, **CONTRACT)
    logits, loss = gpt(X, Y)
    opt.backward(loss, logits) if backward == 'optimizer' else loss.backward()
    layers = {n: gpt.get_submodule(n) for n in opt.modules_}
    before = {n: (augmented(m), augmented(m, use_grad=True)) for n, m in layers.items()}
    opt.step()
    for n, (A, G) in opt.factors().items():
        W0, V = before[n]
        vec_u = torch.linalg.solve(dense_fisher(name, A, G, damping, mode), V.T.reshape(-1))
        U = vec_u.reshape(V.shape[1], V.shape[0]).T
        torch.testing.assert_close(augmented(layers[n]) - W0, -lr * U, rtol=1e-8, atol=1e-12,
                                   msg=lambda m: f'{n}: {m}')


def test_kl_clip_bounds_the_quadratic_model_of_the_kl():
    gpt, (X, Y) = tiny_gpt(), batch(0)
    lr, kappa = 0.1, 1e-6
    opt = build_optimizer('fixed_fisher', gpt, lr=lr, **dict(CONTRACT, kl_clip=kappa))
    logits, loss = gpt(X, Y)
    opt.backward(loss, logits)
    layers = {n: gpt.get_submodule(n) for n in opt.modules_}
    before = {n: (augmented(m), augmented(m, use_grad=True)) for n, m in layers.items()}
    opt.step()
    # the step is -lr nu U with U = F^-1 V, and its quadratic KL model sum_layers lr^2 nu^2 <U, V> is kappa
    nu = opt.diagnostics()['kl_nu']
    assert 0 < nu < 1
    kl = sum(((W0 - augmented(layers[n])) * lr * nu * V).sum() for n, (W0, V) in before.items())
    torch.testing.assert_close(kl.item(), kappa, rtol=1e-9, atol=0)


def test_adam_grafting_gives_each_layer_the_norm_of_adams_step():
    gpt, (X, Y) = tiny_gpt(), batch(0)
    lr, eps = 0.01, 1e-8
    opt = build_optimizer('kfac', gpt, lr=lr, grafting='adam', eps=eps, **CONTRACT)
    ref_gpt = tiny_gpt()  # the same step without grafting: the direction
    ref = build_optimizer('kfac', ref_gpt, lr=lr, **CONTRACT)
    w0 = {n: augmented(gpt.get_submodule(n)) for n in opt.modules_}
    logits, loss = gpt(X, Y)
    opt.backward(loss, logits)
    grads = {n: augmented(gpt.get_submodule(n), use_grad=True) for n in opt.modules_}
    opt.step()
    train_step(ref, ref_gpt, X, Y)
    for n in opt.modules_:
        step = augmented(gpt.get_submodule(n)) - w0[n]
        ref_step = augmented(ref_gpt.get_submodule(n)) - w0[n]
        V = grads[n]
        adam_step = lr * V / (V.abs() + eps)  # Adam's first step: m_hat = V, v_hat = V^2
        torch.testing.assert_close(step.norm(), adam_step.norm(), rtol=1e-9, atol=0)
        torch.testing.assert_close(step / step.norm(), ref_step / ref_step.norm(), rtol=1e-8, atol=1e-12)


def test_momentum_and_weight_decay_follow_the_documented_update():
    """W1 = W0 (1 - lr wd) - lr U1,  W2 = W1 (1 - lr wd) - lr (mu U1 + U2), no decay on the bias column; U_k from
    a contract run (no momentum, no decay) of the same factors and gradients."""
    lr, wd, mu = 0.05, 0.1, 0.9
    gpt = tiny_gpt()
    opt = build_optimizer('fixed_fisher', gpt, lr=lr, **dict(CONTRACT, momentum=mu, weight_decay=wd))
    layer = gpt.transformer.h[0].mlp.c_fc
    Ws, Us = [augmented(layer)], []
    for k in range(2):
        X, Y = batch(k)
        probe = tiny_gpt()  # same weights as gpt now, stepped once without momentum or decay: -lr U_k
        probe.load_state_dict(gpt.state_dict())
        p_opt = build_optimizer('fixed_fisher', probe, lr=lr, **CONTRACT)
        train_step(p_opt, probe, X, Y)
        Us.append((Ws[-1] - augmented(probe.transformer.h[0].mlp.c_fc)) / lr)
        train_step(opt, gpt, X, Y)
        Ws.append(augmented(layer))
    decay = torch.ones_like(Ws[0])
    decay[:, -1] = 0  # the bias column is not decayed
    torch.testing.assert_close(Ws[1], Ws[0] - lr * wd * decay * Ws[0] - lr * Us[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(Ws[2], Ws[1] - lr * wd * decay * Ws[1] - lr * (mu * Us[0] + Us[1]),
                               rtol=1e-9, atol=1e-12)


def test_qr_refresh_keeps_an_exact_eigenbasis():
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    s = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0, 5.0], dtype=torch.float64)
    M = Q @ torch.diag(s) @ Q.T
    s_new, Q_new = qr_refresh(M, Q[:, torch.randperm(6)])
    torch.testing.assert_close(s_new.sort().values, s, rtol=0, atol=1e-12)
    torch.testing.assert_close(Q_new @ torch.diag(s_new) @ Q_new.T, M, rtol=0, atol=1e-12)


def test_qr_refresh_tracks_factors_between_eigendecompositions():
    """eigen_refresh='qr': on factor-update steps between eigh's the eigenbasis follows the new factors, so
    Q diag(s) Q^T is closer to them than the stale eigh basis of the first step."""
    errors = {}
    for refresh in ('none', 'qr'):
        gpt = tiny_gpt()
        opt = build_optimizer('fixed_fisher', gpt, lr=0.05, eigen_refresh=refresh, factor_update_freq=1,
                              inv_update_freq=100, factor_decay=0.5)
        for k in range(3):
            train_step(opt, gpt, *batch(k))
        st = opt.layer_state['transformer.h.0.mlp.c_fc']
        errors[refresh] = [(st['Q_' + f] @ torch.diag(st['s_' + f]) @ st['Q_' + f].T - st[f]).norm() / st[f].norm()
                           for f in 'AG']
    assert errors['none'][0] > 1e-3 and errors['none'][1] > 1e-3  # the factors moved since the eigh
    assert errors['qr'][0] < errors['none'][0] / 2 and errors['qr'][1] < errors['none'][1] / 2


@pytest.mark.parametrize('name,fisher,refresh', [('kfac', 'empirical', None), ('fixed_fisher', 'sampled', 'qr'),
                                                 ('eva', 'empirical', None)])
def test_resume_from_state_dict_is_exact(name, fisher, refresh):
    cfg = dict(lr=0.02, momentum=0.9, weight_decay=0.1, kl_clip=1e-2, factor_decay=0.9, factor_update_freq=2,
               inv_update_freq=3, fisher=fisher, grafting='adam', damping_mode='relative')
    if refresh:
        cfg['eigen_refresh'] = refresh
    gpt = tiny_gpt()
    opt = build_optimizer(name, gpt, **cfg)
    for k in range(3):
        train_step(opt, gpt, *batch(k))
    buffer = io.BytesIO()
    torch.save({'model': gpt.state_dict(), 'optimizer': opt.state_dict()}, buffer)
    torch.manual_seed(123)  # the sampled labels
    for k in range(3, 7):
        train_step(opt, gpt, *batch(k))

    buffer.seek(0)
    checkpoint = torch.load(buffer)
    resumed = tiny_gpt(seed=1)
    resumed.load_state_dict(checkpoint['model'])
    opt2 = build_optimizer(name, resumed, **cfg)
    opt2.load_state_dict(checkpoint['optimizer'])
    torch.manual_seed(123)
    for k in range(3, 7):
        train_step(opt2, resumed, *batch(k))
    for (n, p), p2 in zip(gpt.named_parameters(), resumed.parameters()):
        assert torch.equal(p, p2), n
    for n, (A, G) in opt.factors().items():
        assert torch.equal(A, opt2.factors()[n][0]) and torch.equal(G, opt2.factors()[n][1]), n


def test_state_dict_of_another_model_is_refused():
    opt = build_optimizer('kfac', tiny_gpt(n_layer=2))
    with pytest.raises(ValueError, match='preconditions layers'):
        build_optimizer('kfac', tiny_gpt(n_layer=1)).load_state_dict(opt.state_dict())


@pytest.mark.parametrize('name', METHODS)
def test_nan_gradient_is_skipped_and_training_goes_on(name, capsys):
    gpt = tiny_gpt()
    opt = build_optimizer(name, gpt, lr=0.01, factor_update_freq=1, inv_update_freq=1)
    train_step(opt, gpt, *batch(0))
    params = [p.detach().clone() for p in gpt.parameters()]
    factors = {n: tuple(t.clone() for t in f) for n, f in opt.factors().items()}

    def poison():
        gpt.transformer.h[0].mlp.c_fc.weight.grad[0, 0] = float('nan')
    train_step(opt, gpt, *batch(1), poison=poison)
    assert all(torch.equal(p, q) for p, q in zip(gpt.parameters(), params))
    for n, (A, G) in opt.factors().items():
        assert torch.equal(A, factors[n][0]) and torch.equal(G, factors[n][1])
    assert opt.skipped_steps == 1 and opt.diagnostics()['skipped_steps'] == 1.0
    assert 'transformer.h.0.mlp.c_fc.weight.grad' in capsys.readouterr().out
    train_step(opt, gpt, *batch(2))
    assert all(torch.isfinite(p).all() and not torch.equal(p, q) for p, q in zip(gpt.parameters(), params))


def test_inf_activation_poisons_factors_and_is_skipped():
    gpt = tiny_gpt()
    opt = build_optimizer('fixed_fisher', gpt, factor_update_freq=1)
    train_step(opt, gpt, *batch(0))
    factors = {n: tuple(t.clone() for t in f) for n, f in opt.factors().items()}
    inf_at_one_token = lambda module, inputs, out: out.index_fill(1, torch.tensor([2]), float('inf'))  # noqa: E731
    handle = gpt.transformer.h[0].ln_2.register_forward_hook(inf_at_one_token)
    train_step(opt, gpt, *batch(1))
    handle.remove()
    assert opt.skipped_steps == 1
    for n, (A, G) in opt.factors().items():
        assert torch.equal(A, factors[n][0]) and torch.equal(G, factors[n][1])


@pytest.mark.parametrize('fails', [1, 2])
@pytest.mark.parametrize('name,op', [('fixed_fisher', 'eigh'), ('kfac', 'cholesky_ex')])
def test_failed_decomposition_retries_in_float64_with_the_same_damping(name, op, fails, monkeypatch, capsys):
    """One failure: the retry decomposes the same damped factor in float64 (no shift: for Fixed Fisher a shift would
    be a cross term). Two: the factor is shifted, logged as a different Fisher and counted in decomp_shifts."""
    real = getattr(torch.linalg, op)
    calls = []

    def fails_first(M, *args, **kwargs):
        calls.append(M.detach().clone())
        if len(calls) <= fails:
            raise torch.linalg.LinAlgError('simulated failure')
        return real(M, *args, **kwargs)
    monkeypatch.setattr(torch.linalg, op, fails_first)
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=2, n_embd=8))  # float32
    opt = build_optimizer(name, gpt, factor_update_freq=1, inv_update_freq=1)
    train_step(opt, gpt, *batch(0))
    assert [M.dtype for M in calls[:fails + 1]] == [torch.float32, torch.float64, torch.float64][:fails + 1]
    # the float64 retry decomposes the same matrix (the factor plus the same damping), to float32 rounding
    torch.testing.assert_close(calls[1], calls[0].double(), rtol=1e-5, atol=1e-6)  # float32 rounding of M + λI
    out = capsys.readouterr().out
    d = opt.diagnostics()
    assert d['decomp_retries'] == 1.0 and 'retrying in float64' in out
    assert d['decomp_shifts'] == fails - 1 and ('a different damped Fisher' in out) == (fails == 2)
    if fails == 2:  # the shifted matrix: more on the diagonal, the same off it
        off = ~torch.eye(calls[1].shape[0], dtype=torch.bool)
        assert ((calls[2] - calls[1]).diagonal() > 0).all() and torch.equal(calls[2][off], calls[1][off])
    assert all(torch.isfinite(p).all() for p in gpt.parameters())


@pytest.mark.parametrize('kwargs,match', [
    (dict(damping=0.0), 'damping'), (dict(damping=-1e-3), 'damping'), (dict(fisher='mc'), 'fisher'),
    (dict(damping_mode='trace'), 'damping_mode'), (dict(grafting='sgd'), 'grafting'),
    (dict(exclude='transformer.h.7.mlp'), 'exclude'), (dict(kl_clip=0.0), 'kl_clip'),
    (dict(eigen_refresh='power'), 'eigen_refresh'), (dict(factor_update_freq=0), 'factor_update_freq'),
], ids=lambda x: str(x) if isinstance(x, str) else ','.join(f'{k}={v}' for k, v in x.items()))
def test_bad_input_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer('fixed_fisher', tiny_gpt(), **kwargs)


def test_exclude_and_max_factor_dim_send_layers_to_adamw(capsys):
    gpt = tiny_gpt(n_layer=2)
    opt = build_optimizer('kfac', gpt, exclude='transformer.h.0.mlp, transformer.h.1.attn.c_proj', max_factor_dim=30)
    assert list(opt.modules_) == ['transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj',
                                  'transformer.h.1.attn.c_attn']  # c_fc is 32 wide, c_proj (mlp) 33
    out = capsys.readouterr().out
    assert 'transformer.h.0.mlp.c_fc (excluded)' in out
    assert 'transformer.h.1.mlp.c_fc (wider than max_factor_dim=30)' in out
    adamw = {p for g in opt.param_groups if g['kind'] == 'adamw' for p in g['params']}
    assert gpt.transformer.h[1].attn.c_proj.weight in adamw and gpt.transformer.h[1].mlp.c_proj.bias in adamw


def test_lr_schedule_reaches_kronecker_and_adamw_groups():
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer('kfac', gpt, adamw_lr_scale=0.5)
    assert {g['kind'] for g in opt.param_groups} == {'kronecker', 'adamw'}
    assert all(g['lr_scale'] == 0.5 for g in opt.param_groups if g['kind'] == 'adamw')
    for group in opt.param_groups:  # what train.py does before each step
        group['lr'] = 0.0 * group.get('lr_scale', 1.0)
    params = [p.detach().clone() for p in gpt.parameters()]
    train_step(opt, gpt, X, Y)
    assert all(torch.equal(p, q) for p, q in zip(gpt.parameters(), params))


def test_train_globals_reach_the_builders():
    globals_ = dict(lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.95, damping=1e-3, damping_mode='absolute',
                    momentum=0.9, factor_decay=0.95, factor_update_freq=10, inv_update_freq=100, kl_clip=None,
                    fisher='empirical', exclude='', max_factor_dim=8192, eigen_refresh='none', grafting='none')
    for name in METHODS:
        expected = set(globals_) - ({'eigen_refresh'} if name != 'fixed_fisher' else set())
        assert set(optimizer_kwargs(name, globals_)) == expected
    assert 'momentum' not in optimizer_kwargs('dykaf', globals_)  # a knob a method lists as unused is not passed


def train_py_globals():
    """train.py's top-level constant assignments (its config defaults), read without running it."""
    tree = ast.parse(open(os.path.join(ROOT, 'train.py')).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def test_one_set_of_defaults_declared_once():
    """The shared knobs are declared once, in KroneckerOptimizer's signature, with train.py's defaults; every method
    takes them through **kwargs (no copied signature), and its own knobs' defaults are train.py's too."""
    train = train_py_globals()
    base = {k: p.default for k, p in inspect.signature(KroneckerOptimizer.__init__).parameters.items()
            if k not in ('self', 'model')}
    both = [k for k in base if k in train and k != 'lr']  # train.py calls lr learning_rate, nanoGPT's
    assert len(both) >= 15 and {k: base[k] for k in both} == {k: train[k] for k in both}
    for name, factory in OPTIMIZERS.items():
        if not inspect.isclass(factory) or factory is KroneckerOptimizer:
            continue
        for cls in factory.__mro__:
            if cls is KroneckerOptimizer or '__init__' not in vars(cls):
                continue
            params = inspect.signature(cls.__init__).parameters
            assert not set(params) & set(base), f"{cls.__name__} copies shared knobs {set(params) & set(base)}"
            for k, p in params.items():
                if k in train and p.default is not inspect.Parameter.empty:
                    assert p.default == train[k], f"{cls.__name__}.{k}={p.default!r}, train.py {train[k]!r}"


@pytest.mark.parametrize('name', METHODS)
def test_diagnostics_and_a_short_run(name):
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer(name, gpt, lr=0.02, factor_update_freq=2, inv_update_freq=4, kl_clip=1e-2,
                          grafting='adam', weight_decay=0.0)
    losses = [train_step(opt, gpt, X, Y) for _ in range(25)]
    assert losses[-1] < losses[0] - 0.3
    d = opt.diagnostics()
    assert set(d) == {'damping', 'damping_eff', 'kl_nu', 'update_grad_ratio', 'skipped_steps', 'decomp_retries',
                      'decomp_shifts', 'ms_factors', 'ms_decomp', 'ms_precond'}
    assert all(isinstance(v, float) for v in d.values())
    assert 0 < d['kl_nu'] <= 1 and d['update_grad_ratio'] > 0 and d['ms_factors'] > 0
