"""
Drop-in: every optimizer of optim/ steps after a plain loss.backward() as after optimizer.backward(loss, logits, 1.0),
to the bit, factors included, also after a step whose loss_scale was not 1; and where a plain backward cannot give
the factors (the sampled Fisher, micro-steps of a scaled loss, a layer applied twice) step() says to call
optimizer.backward. The step after a plain backward against a dense solve: test_optim_kronecker.py.
"""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from optim import OPTIMIZERS, build_optimizer, optimizer_kwargs
from test_optim_kronecker import batch, tiny_gpt  # the tiny GPT and helpers the optimizer tests share

# steps 0, 2, 4 update factors, 0 and 2 decompose (iEF: every step); KL clip and grafting on, to reach their code
CFG = dict(lr=0.02, momentum=0.9, weight_decay=0.1, kl_clip=1e-2, grafting='adam', factor_decay=0.9,
           factor_update_freq=2, inv_update_freq=2, damping=1e-2)
HOOKED = [name for name in OPTIMIZERS if name not in ('adamw', 'muon', 'soap', 'psgd', 'dykaf')]  # factors from hooks
SAMPLED = [name for name in HOOKED if name != 'ief']  # iEF takes fisher='empirical' only


def assert_same(a, b, where='state_dict'):
    """a and b equal to the bit: tensors by torch.equal, containers item by item, NaN equal to NaN."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, where


def run(name, plain, steps=5):
    """steps steps of one tiny GPT: step 0 of two half-loss micro-steps by optimizer.backward(loss / 2, logits,
    0.5) (it leaves capture.loss_scale at 0.5), the others by a plain loss.backward() if plain, else by
    optimizer.backward(loss, logits, 1.0). An optimizer without .backward (torch's) takes the plain one throughout,
    as train.py does."""
    gpt = tiny_gpt()
    opt = build_optimizer(name, gpt, **optimizer_kwargs(name, CFG))
    backward = getattr(opt, 'backward', lambda loss, logits, scale: loss.backward())
    for k in range(steps):
        X, Y = batch(k)
        if k == 0:
            for Xh, Yh in zip(X.chunk(2, 1), Y.chunk(2, 1)):
                logits, loss = gpt(Xh, Yh)
                backward(loss / 2, logits, 0.5)
        else:
            logits, loss = gpt(X, Y)
            loss.backward() if plain else backward(loss, logits, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return gpt, opt


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_plain_backward_steps_as_optimizer_backward(name):
    (gpt, opt), (ref_gpt, ref) = run(name, plain=True), run(name, plain=False)
    for (n, p), q in zip(gpt.named_parameters(), ref_gpt.parameters()):
        assert torch.equal(p, q), n
    if name in HOOKED + ['dykaf']:
        factors, ref_factors = opt.factors(), ref.factors()
        assert factors and set(factors) == set(ref_factors)
        for n, pair in factors.items():
            for f, a, b in zip('AG', pair, ref_factors[n]):
                assert torch.equal(a, b), f'{n}.{f}'
    assert_same(opt.state_dict(), ref.state_dict())  # momenta, Adam moments, decompositions, counters


@pytest.mark.parametrize('name', SAMPLED)
def test_plain_backward_with_the_sampled_fisher_is_a_clear_error(name):
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer(name, gpt, fisher='sampled')
    gpt(X, Y)[1].backward()
    with pytest.raises(RuntimeError, match=r"fisher='sampled'.*optimizer\.backward\(scaled_loss, logits, loss_scale\)"):
        opt.step()


@pytest.mark.parametrize('name', HOOKED)
def test_plain_backward_of_two_micro_steps_is_a_clear_error(name):
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer(name, gpt)
    for Xh, Yh in zip(X.chunk(2, 1), Y.chunk(2, 1)):
        (gpt(Xh, Yh)[1] / 2).backward()
    with pytest.raises(RuntimeError, match=r'transformer\.h\.0\.attn\.c_attn ran 2 forward passes.*'
                                           r'optimizer\.backward\(scaled_loss, logits, loss_scale\)'):
        opt.step()


def test_plain_backward_of_a_layer_applied_twice_is_a_clear_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.Tanh()).double()
    X, Y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 4, (6,))
    opt = build_optimizer('kfac', net)
    F.cross_entropy(net(net(X)), Y).backward()
    with pytest.raises(RuntimeError, match=r'0 ran 2 forward passes.*applied several times per forward'):
        opt.step()
    opt.zero_grad()
    logits = net(net(X))
    opt.backward(F.cross_entropy(logits, Y), logits, 1.0)  # each application's tokens counted: no error
    opt.step()
