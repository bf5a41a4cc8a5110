"""
damping_schedule='lm' (optim/kronecker.py's adapt_damping, optim/levenberg_marquardt.py): the Levenberg-Marquardt rule of Martens & Grosse (2015).
The reduction ratio against one built from a dense exact Fisher (reverse-mode Jacobian, torch.func.jacrev, and the
softmax Hessian per token) and autograd's gradient; lambda moves by (19/20)^T1 the way the ratio says; it is saved
and resumed; train.py adapts and logs it end to end, and plot.py draws it.
"""

import math
import os

import pytest
import torch
from torch.func import functional_call, jacrev

from PIL import Image

from optim import build_optimizer
from plot import plot_runs
from test_optim_kronecker import batch, tiny_gpt
from test_train import records, train, tiny_data  # noqa: F401 (tiny_data is a fixture)

LM = dict(momentum=0.0, weight_decay=0.0, kl_clip=None, factor_update_freq=1, inv_update_freq=1,
          damping_schedule='lm', damping_update_freq=1)


def reference_ratio(model, before, after, batches, kron_params, damping):
    """rho = (h(after) - h(before)) / (g^T d + d^T F d / 2 + damping |d_kron|^2 / 2), d = after - before, everything a
    mean over the batches, F = J^T blockdiag(diag(p_m) - p_m p_m^T) J / tokens from the dense Jacobian J of the
    logits."""
    names = list(before)
    model.eval()  # the optimizer's hooks record nothing in eval mode
    d = torch.cat([(after[n] - before[n]).reshape(-1) for n in names])
    h0 = h1 = gd = dFd = 0.0
    for X, Y in batches:
        weights = {n: before[n].clone().requires_grad_() for n in names}
        logits, loss = functional_call(model, weights, (X, Y))
        grads = torch.autograd.grad(loss, [weights[n] for n in names])
        J = jacrev(lambda w: functional_call(model, w, (X, Y))[0])({n: before[n] for n in names})
        J = torch.cat([J[n].reshape(logits.numel(), -1) for n in names], 1)  # (tokens * vocab, params)
        p = logits.detach().softmax(-1).reshape(-1, logits.shape[-1])  # (tokens, vocab)
        H = torch.block_diag(*[torch.diag(q) - torch.outer(q, q) for q in p]) / p.shape[0]
        F = J.T @ H @ J
        h0 += loss.item()
        h1 += functional_call(model, after, (X, Y))[1].item()
        gd += (torch.cat([g.reshape(-1) for g in grads]) @ d).item()
        dFd += (d @ F @ d).item()
    model.train()
    n = len(batches)
    lam_term = damping * sum((after[k] - before[k]).square().sum().item() for k in kron_params)
    return (h1 - h0) / n / (gd / n + 0.5 * (dFd / n + lam_term))


@pytest.mark.parametrize('name', ['fixed_fisher', 'kfac'])
@pytest.mark.parametrize('lr, direction', [(1e-3, 'down'), (0.3, 'up'), (3.0, 'same')])
def test_reduction_ratio_and_rule(name, lr, direction):
    """One step on two micro-batches, then adapt_damping on them: rho equals the dense reference; a small step (the
    quadratic model holds, rho near 1) lowers lambda by omega = (19/20)^T1, an overshooting one raises it, and one so
    long that the model itself predicts an increase (M(delta) > M(0): rho has no meaning) leaves it."""
    model = tiny_gpt(seed=1)
    opt = build_optimizer(name, model, lr=lr, damping=1e-2, **{**LM, 'damping_update_freq': 2})
    batches = [batch(0), batch(1)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for X, Y in batches:
        logits, loss = model(X, Y)
        opt.backward(loss / 2, logits, 0.5)
    opt.step()
    assert opt.lm_pending
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    kron = [n for n in before if n.rsplit('.', 1)[0] in opt.modules_]
    assert kron  # the attention and MLP projections
    rho = opt.adapt_damping(model, batches)
    expected = reference_ratio(model, before, after, batches, kron, 1e-2)
    # adapt_damping takes dFd in float32 (softmax and J delta: 13-term sums per token, a mean over 18 tokens, ~2e-6
    # relative at worst), and M(delta) - M(0) cancels it against grad h.delta by up to 40x (lr=0.3)
    assert rho == pytest.approx(expected, rel=1e-4, abs=1e-9)
    assert not opt.lm_pending and opt.adapt_damping(model, batches) is None  # once per due step
    omega = (19 / 20) ** 2
    if direction == 'down':
        assert rho > 0.75 and opt.damping == pytest.approx(1e-2 * omega)
    elif direction == 'up':
        assert rho < 0.25 and opt.damping == pytest.approx(1e-2 / omega)
    else:
        assert 0 < rho < 0.25 and opt.damping == 1e-2  # the loss rose, and so did the model's prediction
    assert opt.diagnostics()['lm_ratio'] == rho and opt.diagnostics()['damping'] == opt.damping


def test_lm_every_t1_steps_and_resume():
    """Only steps t with t % T1 == 0 ask for the ratio; the adapted lambda and the last ratio are saved and resumed,
    and a 'constant' schedule keeps its configured lambda."""
    model = tiny_gpt()
    opt = build_optimizer('fixed_fisher', model, lr=1e-3, damping=1e-2, **{**LM, 'damping_update_freq': 3})
    pending = []
    for t in range(7):
        X, Y = batch(t)
        logits, loss = model(X, Y)
        opt.backward(loss, logits)
        opt.step()
        pending.append(opt.lm_pending)
        opt.adapt_damping(model, [(X, Y)])
        opt.zero_grad()
    assert pending == [True, False, False, True, False, False, True]
    assert opt.damping != 1e-2 and math.isfinite(opt.lm_ratio)
    again = build_optimizer('fixed_fisher', model, lr=1e-3, damping=1e-2, **{**LM, 'damping_update_freq': 3})
    again.load_state_dict(opt.state_dict())
    assert (again.damping, again.lm_ratio) == (opt.damping, opt.lm_ratio)
    constant = build_optimizer('fixed_fisher', model, lr=1e-3, damping=1e-2, **{**LM, 'damping_schedule': 'constant'})
    constant.load_state_dict(opt.state_dict())
    assert constant.damping == 1e-2 and not constant.lm_pending


def test_bad_schedule_names_the_value():
    with pytest.raises(ValueError, match="unknown damping_schedule 'adaptive'"):
        build_optimizer('kfac', tiny_gpt(), damping_schedule='adaptive')
    with pytest.raises(ValueError, match='damping_update_freq must be an int >= 1, got 0'):
        build_optimizer('fixed_fisher', tiny_gpt(), damping_schedule='lm', damping_update_freq=0)


def test_train_adapts_and_logs_lambda(tiny_data, tmp_path):
    """train.py with damping_schedule='lm': each train record carries lm_ratio and the current lambda, which moves."""
    train(tiny_data, tmp_path, '--optimizer=fixed_fisher', '--damping_schedule=lm', '--damping_update_freq=1',
          '--damping=1e-2', '--max_iters=6', '--eval_interval=6', '--factor_update_freq=1', '--inv_update_freq=1')
    logged = records(tmp_path, 'train')
    assert len(logged) == 6 and all(math.isfinite(r['lm_ratio']) for r in logged)
    lams = [r['damping'] for r in logged]
    omega = 19 / 20
    assert all(b / a == pytest.approx(omega) or b / a == pytest.approx(1 / omega) or b == a
               for a, b in zip([1e-2] + lams, lams))
    assert len(set(lams)) > 1
    paths = plot_runs([tmp_path], tmp_path / 'plots')
    assert os.path.basename(paths[-1]) == 'damping_vs_steps.png'
    with Image.open(paths[-1]) as image:
        assert image.format == 'PNG' and image.size[0] > 100
        image.verify()
