"""
iEF and iEKFAC (optim/ief.py): the update against J^T (J J^T + lambda I)^-1 s from explicit per-sample gradients
(torch.func), for sequences on a GPT and tokens on an MLP; each sample's loss falling by lr s_n to first order;
the two Gram forms; micro-steps; iEKFAC's rescaled G; bad input; a short run.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from model import GPT, GPTConfig
from optim import build_optimizer
from optim.ief import gram

CONTRACT = dict(momentum=0.0, weight_decay=0.0, kl_clip=None, factor_decay=0.0, factor_update_freq=1,
                inv_update_freq=1, adamw_lr_scale=0.0)


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=2, n_embd=8)).double()


def batch(seed, B=3, T=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 13, (B, T), generator=g), torch.randint(0, 13, (B, T), generator=g)


def layer_params(model, opt):
    """{name: param} of the preconditioned layers, weight then bias, in the optimizer's layer order."""
    return {f'{n}.{k}': p for n in opt.modules_ for k, p in model.get_submodule(n).named_parameters()}


def flat_update(model, opt, before):
    """The step's change of the preconditioned layers' [W | b], flattened as J's columns."""
    return torch.cat([(p.detach() - before[k]).reshape(-1) for k, p in layer_params(model, opt).items()])


def ief_reference(J, s, damping):
    return J.T @ torch.linalg.solve(J @ J.T + damping * torch.eye(J.shape[0], dtype=J.dtype), s)


def gpt_per_sequence(gpt, opt, X, Y):
    """J (N, P): each sequence's gradient of its summed loss on the preconditioned layers; s (N,). In eval mode,
    so that the optimizer's hooks record none of it."""
    gpt.eval()
    params = {k: p.detach() for k, p in layer_params(gpt, opt).items()}

    def summed_loss(p, x, y):
        return functional_call(gpt, p, (x[None], y[None]))[1] * x.shape[0]  # the model's mean over T tokens
    J = torch.stack([torch.cat([t.reshape(-1) for t in grad(summed_loss)(params, x, y).values()])
                     for x, y in zip(X, Y)])
    with torch.no_grad():
        p = F.softmax(gpt(X, Y)[0], -1)
    s = (p - F.one_hot(Y, 13)).square().sum((1, 2))  # sum over the sequence of ||p_t - e_(y_t)||^2
    gpt.train()
    return J, s


def test_sequence_update_equals_explicit_per_sample_solve():
    gpt, (X, Y) = tiny_gpt(), batch(0)
    lr, damping = 0.1, 1e-2
    opt = build_optimizer('ief', gpt, lr=lr, damping=damping, **CONTRACT)
    J, s = gpt_per_sequence(gpt, opt, X, Y)
    before = {k: p.detach().clone() for k, p in layer_params(gpt, opt).items()}
    logits, loss = gpt(X, Y)
    opt.backward(loss, logits)
    opt.step()
    torch.testing.assert_close(flat_update(gpt, opt, before), -lr * ief_reference(J, s, damping), rtol=1e-8,
                               atol=1e-12)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 7), nn.Linear(7, 4)

    def forward(self, x):  # (B, T, 5) -> (B, T, 4): no mixing of tokens, so a token's gradient is g_t a_t^T
        return self.fc2(torch.tanh(self.fc1(x)))


def test_token_update_equals_explicit_per_sample_solve():
    torch.manual_seed(0)
    mlp = MLP().double()
    X, Y = torch.randn(2, 3, 5, dtype=torch.float64), torch.randint(0, 4, (2, 3))
    lr, damping = 0.1, 1e-2
    opt = build_optimizer('ief', mlp, lr=lr, damping=damping, samples='tokens', **CONTRACT)
    mlp.eval()  # the reference's forwards are not the step's
    params = {k: p.detach() for k, p in layer_params(mlp, opt).items()}
    per = vmap(grad(lambda p, x, y: F.cross_entropy(functional_call(mlp, p, (x[None],)), y[None])),
               in_dims=(None, 0, 0))(params, X.reshape(-1, 5), Y.reshape(-1))
    J = torch.cat([t.reshape(6, -1) for t in per.values()], 1)
    s = (F.softmax(mlp(X), -1) - F.one_hot(Y, 4)).square().sum(-1).reshape(-1).detach()
    mlp.train()
    before = {k: p.detach().clone() for k, p in layer_params(mlp, opt).items()}
    logits = mlp(X)
    opt.backward(F.cross_entropy(logits.reshape(-1, 4), Y.reshape(-1)), logits)
    opt.step()
    torch.testing.assert_close(flat_update(mlp, opt, before), -lr * ief_reference(J, s, damping), rtol=1e-8,
                               atol=1e-12)


def test_each_sample_loss_falls_by_lr_s_to_first_order():
    gpt, (X, Y) = tiny_gpt(), batch(1)
    lr = 1e-5
    opt = build_optimizer('ief', gpt, lr=lr, damping=1e-12, **CONTRACT)
    J, s = gpt_per_sequence(gpt, opt, X, Y)
    assert torch.linalg.matrix_rank(J) == J.shape[0]

    def per_sequence_losses():
        with torch.no_grad():  # no grad: the optimizer's hooks record nothing
            logits = gpt(X, Y)[0]
        return F.cross_entropy(logits.transpose(1, 2), Y, reduction='none').sum(1)
    l0 = per_sequence_losses()
    logits, loss = gpt(X, Y)
    opt.backward(loss, logits)
    opt.step()
    torch.testing.assert_close((per_sequence_losses() - l0) / lr, -s, rtol=1e-3, atol=0)


@pytest.mark.parametrize('da,dg', [(4, 3), (30, 20)], ids=['per-sample-form', 'token-gram-form'])
def test_gram_forms_equal_explicit_per_sample_gradients(da, dg):
    torch.manual_seed(0)
    N, T = 3, 5
    a, g = torch.randn(N * T, da, dtype=torch.float64), torch.randn(N * T, dg, dtype=torch.float64)
    J = torch.einsum('ntg,nta->nga', g.view(N, T, dg), a.view(N, T, da)).reshape(N, -1)
    torch.testing.assert_close(gram(a, g, T), J @ J.T, rtol=1e-12, atol=1e-12)


def test_iekfac_rescales_each_tokens_output_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(6, 5).double()
    X, Y = torch.randn(2, 7, 6, dtype=torch.float64), torch.randint(0, 5, (2, 7))
    params = {k: v.detach() for k, v in layer.named_parameters()}
    g = vmap(grad(lambda p, x, y: F.cross_entropy(functional_call(layer, p, (x[None],)), y[None])),
             in_dims=(None, 0, 0))(params, X.reshape(-1, 6), Y.reshape(-1))['bias']  # g_m, (M, 5)
    s = (F.softmax(layer(X), -1) - F.one_hot(Y, 5)).square().sum(-1).reshape(-1, 1).detach()
    lr, damping = 0.1, 1e-2
    opt = build_optimizer('iekfac', layer, lr=lr, damping=damping, **CONTRACT)
    kfac = build_optimizer('kfac', nn.Linear(6, 5).double(), damping=damping, **CONTRACT)
    logits = layer(X)
    opt.backward(F.cross_entropy(logits.reshape(-1, 5), Y.reshape(-1)), logits)
    V = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).clone()
    W0 = torch.cat([layer.weight, layer.bias[:, None]], 1).detach().clone()
    opt.step()
    A, G = opt.factors()['']
    torch.testing.assert_close(G, (g / s.sqrt()).T @ (g / s.sqrt()) / g.shape[0], rtol=1e-10, atol=1e-14)
    kfac.layer_state[''].update(A=A, G=G)
    kfac.update_decomposition(kfac.layer_state[''])
    W1 = torch.cat([layer.weight, layer.bias[:, None]], 1).detach()
    torch.testing.assert_close(W1 - W0, -lr * kfac.precondition(kfac.layer_state[''], V), rtol=1e-9, atol=1e-14)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match='empirical'):
        build_optimizer('ief', tiny_gpt(), fisher='sampled')
    with pytest.raises(ValueError, match='samples'):
        build_optimizer('ief', tiny_gpt(), samples='batches')
    with pytest.raises(ValueError, match='logits_module'):
        build_optimizer('iekfac', tiny_gpt(), logits_module='head')


@pytest.mark.parametrize('name', ['ief', 'iekfac'])
def test_short_run_trains(name):
    gpt, (X, Y) = tiny_gpt(), batch(0, T=6)
    opt = build_optimizer(name, gpt, lr=0.05 if name == 'ief' else 0.02, factor_update_freq=2, inv_update_freq=4,
                          kl_clip=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(20):
        logits, loss = gpt(X, Y)
        opt.backward(loss, logits)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    assert not opt.capture.logits.s  # emptied when the step ends
