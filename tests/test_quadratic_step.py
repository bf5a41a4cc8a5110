"""step_rule='quadratic' (optim/quadratic_step.py): on a tiny float64 GPT, alpha and mu equal the minimiser of the
quadratic model g^T x + 1/2 x^T (F + lambda I) x built from a dense Fisher (torch.func.jacrev and the softmax
Hessian), without and with momentum; lr caps alpha; a resume keeps alpha, mu and the last update."""
import pytest
import torch
from torch.func import functional_call, jacrev

from model import GPT, GPTConfig
from optim import build_optimizer
from optim.kronecker import gradient_matrix
from test_train import records, train, tiny_data  # noqa: F401 (tiny_data is a fixture)

CFG = dict(lr=1e9, adamw_lr_scale=0.0, weight_decay=0.0, damping=1e-2, damping_mode='absolute', kl_clip=None, grafting='none',
           factor_update_freq=1, inv_update_freq=1, factor_decay=0.0, step_rule='quadratic')


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=2, n_embd=8, bias=True, dropout=0.0)).double()


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 13, (3, 5), generator=g), torch.randint(0, 13, (3, 5), generator=g)


def preconditioned(opt, model):
    """[(parameter name, parameter)] of the preconditioned layers, in the optimizer's group order."""
    names = {p: n for n, p in model.named_parameters()}
    return [(names[p], p) for g in opt.param_groups if g['kind'] == 'kronecker' for p in g['params']]


def dense_model(model, params, X, Y):
    """(grad h, F) over the flattened params at the model's weights: F = mean over tokens of J^T (diag p - p p^T) J."""
    shapes = [p.shape for _, p in params]
    flat = torch.cat([p.detach().reshape(-1) for _, p in params])

    def unflatten(v):
        out, i = {}, 0
        for (n, _), s in zip(params, shapes):
            out[n] = v[i:i + s.numel()].view(s)
            i += s.numel()
        return out
    logits_of = lambda v: functional_call(model, unflatten(v), (X, Y))[0]  # noqa: E731
    J = jacrev(logits_of)(flat).reshape(-1, 13, flat.numel())  # (tokens, vocab, P)
    p = logits_of(flat).detach().reshape(-1, 13).softmax(-1)
    H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    F = torch.einsum('mvp,mvw,mwq->pq', J, H, J) / J.shape[0]
    g = torch.func.grad(lambda v: functional_call(model, unflatten(v), (X, Y))[1])(flat)
    return g, F


def flat_params(params):
    return torch.cat([p.detach().reshape(-1) for _, p in params])


def as_flat(opt, mats):
    """[W | b] matrices of the kronecker groups, flattened in the order of preconditioned()."""
    out = []
    for g, M in zip([g for g in opt.param_groups if g['kind'] == 'kronecker'], mats):
        W = g['params'][0]
        out += [M[:, :W.shape[1]].reshape(-1)] + ([M[:, -1]] if len(g['params']) == 2 else [])
    return torch.cat(out)


def quadratic_step(opt, model, X, Y):
    """One step with the quadratic rule; returns (directions Delta = -U, flattened; dense g; dense C) at the step's
    weights, and the weight change."""
    params, lam = preconditioned(opt, model), opt.damping  # (absolute damping: lambda itself)
    model.eval()  # the quadratic model is taken without dropout (there is none here), as the optimizer takes it
    g, F = dense_model(model, params, X, Y)
    model.train()
    before = flat_params(params)
    model(X, Y)[1].backward()
    groups = [g_ for g_ in opt.param_groups if g_['kind'] == 'kronecker']
    Vs = [gradient_matrix(g_).clone() for g_ in groups]
    opt.set_quadratic_batches(model, [(X, Y)])
    opt.step()
    opt.zero_grad()
    U = [opt.precondition(opt.layer_state[g_['name']], V) for g_, V in zip(groups, Vs)]  # this step's decomposition
    C = F + lam * torch.eye(len(g), dtype=g.dtype)
    # the step's delta: the weights' change less their decoupled decay, lr * adamw_lr_scale * wd (biases: none)
    group = groups[0]
    shrink = group['lr'] * opt.adamw_lr_scale * group['weight_decay']
    on_weights = torch.cat([torch.full((p.numel(),), float(n.endswith('weight')), dtype=g.dtype) for n, p in params])
    return -as_flat(opt, U), g, C, flat_params(params) - (1 - shrink * on_weights) * before


@pytest.mark.parametrize('method,weight_decay', [('kfac', 0.0), ('fixed_fisher', 0.0), ('kfac', 0.5)])
def test_alpha_and_mu_minimise_the_dense_quadratic_model(method, weight_decay):
    """weight_decay: decoupled, outside the model, at the AdamW part's lr (lr 1e9 x adamw_lr_scale 1e-10: a 5%
    shrink; at the cap's lr it would be 5e8)."""
    model = tiny_gpt()
    opt = build_optimizer(method, model, momentum=0.9, **dict(CFG, weight_decay=weight_decay, adamw_lr_scale=1e-10))
    # step 1: no previous update, mu = 0 and alpha = -g^T Delta / Delta^T C Delta
    D1, g, C, delta1 = quadratic_step(opt, model, *batch(1))
    alpha = -(g @ D1) / (D1 @ C @ D1)
    assert opt.qm_alpha == pytest.approx(float(alpha), rel=1e-8) and opt.qm_mu == 0
    torch.testing.assert_close(delta1, alpha * D1, rtol=1e-8, atol=1e-12)
    assert opt.qm_predicted == pytest.approx(float(g @ delta1 + 0.5 * delta1 @ C @ delta1), rel=1e-8)
    assert opt.qm_predicted < 0
    # step 2: (alpha, mu) solve the 2 x 2 system of M&G's eq. (11) with delta0 the first update
    D2, g, C, delta2 = quadratic_step(opt, model, *batch(2))
    B = torch.stack([D2, delta1], 1)
    x = torch.linalg.solve(B.T @ C @ B, -B.T @ g)
    assert (opt.qm_alpha, opt.qm_mu) == (pytest.approx(float(x[0]), rel=1e-8), pytest.approx(float(x[1]), rel=1e-8))
    torch.testing.assert_close(delta2, B @ x, rtol=1e-8, atol=1e-12)
    assert abs(float(B.T[1] @ (g + C @ delta2))) < 1e-10 * float(delta1.norm() * g.norm())  # optimal along delta0


def test_lr_caps_alpha_and_momentum_zero_keeps_mu_zero():
    model = tiny_gpt()
    opt = build_optimizer('kfac', model, momentum=0.0, **dict(CFG, lr=1e-6))
    for k in (1, 2):
        D, g, C, delta = quadratic_step(opt, model, *batch(k))
        assert opt.qm_alpha == 1e-6 and opt.qm_mu == 0
        torch.testing.assert_close(delta, 1e-6 * D, rtol=1e-8, atol=1e-15)


def test_resume_keeps_alpha_mu_and_the_last_update():
    model = tiny_gpt()
    opt = build_optimizer('fixed_fisher', model, momentum=0.9, step_rule_freq=2, **CFG)
    quadratic_step(opt, model, *batch(1))
    sd = opt.state_dict()
    model2 = tiny_gpt()
    model2.load_state_dict(model.state_dict())
    opt2 = build_optimizer('fixed_fisher', model2, momentum=0.9, step_rule_freq=2, **CFG)
    opt2.load_state_dict(sd)
    assert (opt2.qm_alpha, opt2.qm_mu) == (opt.qm_alpha, opt.qm_mu)
    assert not opt.needs_batches and not opt2.needs_batches  # step 1 of step_rule_freq 2: reuses alpha, mu
    for m, o in ((model, opt), (model2, opt2)):  # the same second step, without batches
        m(*batch(2))[1].backward()
        o.step()
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_quadratic_rule_refuses_grafting_and_needs_batches():
    with pytest.raises(ValueError, match='step_rule'):
        build_optimizer('kfac', tiny_gpt(), **dict(CFG, grafting='adam'))
    model = tiny_gpt()
    opt = build_optimizer('kfac', model, **CFG)
    model(*batch(1))[1].backward()
    with pytest.raises(RuntimeError, match='set_quadratic_batches'):
        opt.step()


def test_train_logs_alpha_mu_and_the_quadratic_models_prediction(tiny_data, tmp_path):
    """train.py with step_rule='quadratic' (M&G's KFAC: no grafting, no KL clip) hands the step's batches to the
    optimizer: each train record carries qm_alpha, qm_mu and a negative predicted change; the loss falls."""
    train(tiny_data, tmp_path, '--optimizer=kfac', '--step_rule=quadratic', '--grafting=none', '--kl_clip=None',
          '--grad_clip=None',
          '--momentum=0.9', '--damping=1e-1', '--damping_mode=relative', '--learning_rate=1.0',
          '--adamw_lr_scale=1e-3', '--max_iters=6',
          '--eval_interval=6', '--factor_update_freq=1', '--inv_update_freq=1', '--warmup_iters=0')
    logged = records(tmp_path, 'train')
    assert len(logged) == 6 and all(r['qm_alpha'] > 0 and r['qm_predicted'] < 0 for r in logged)
    assert logged[0]['qm_mu'] == 0 and any(r['qm_mu'] != 0 for r in logged[1:])
    assert logged[-1]['loss'] < logged[0]['loss']


@pytest.mark.parametrize('momentum,weight_decay', [(0.0, 0.0), (0.9, 0.0), (0.9, 0.5)])
def test_lm_takes_rho_from_the_quadratic_model_that_chose_the_step(momentum, weight_decay):
    """damping_schedule='lm' with the quadratic rule (M&G's pairing): rho = (h(theta + delta) - h(theta)) / M(delta)
    with delta the preconditioned layers' update (AdamW's parameters left at theta, though they moved), M from the
    dense g and C (weight decay outside both); then lambda moves by the rule."""
    model = tiny_gpt()
    opt = build_optimizer('kfac', model, momentum=momentum, damping_schedule='lm', damping_update_freq=1,
                          **dict(CFG, adamw_lr_scale=1e-12, weight_decay=weight_decay))  # AdamW at lr 1e-3 moves
    for k in (1, 2):  # the second step has a previous update (mu != 0 with momentum)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        D, g, C, delta = quadratic_step(opt, model, *batch(k))
        names = [n for n, _ in preconditioned(opt, model)]
        moved, i = dict(before), 0
        for n in names:
            moved[n] = before[n] + delta[i:i + before[n].numel()].view_as(before[n])
            i += before[n].numel()
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n not in names)
        model.eval()
        h0, h1 = (float(functional_call(model, w, batch(k))[1].detach()) for w in (before, moved))
        model.train()
        expected = (h1 - h0) / float(g @ delta + 0.5 * delta @ C @ delta)
        lam = opt.damping
        rho = opt.adapt_damping(model, [batch(k)])
        assert rho == pytest.approx(expected, rel=1e-8)
        assert (opt.qm_mu != 0) == (momentum > 0 and k == 2)
        omega = 19 / 20
        assert opt.damping == pytest.approx(lam * omega if rho > 0.75 else lam / omega if rho < 0.25 else lam)
