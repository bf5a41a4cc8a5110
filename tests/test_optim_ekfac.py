"""
EKFAC (optim/ekfac.py) and the per-token rows it rests on (optim/rows.py): the eigenbasis second moments s against
brute-force per-token gradients from torch.func, the step contract of DESIGN.md against a dense solve, s averaged
between eigenbases, rows kept for one step only and equal over micro-steps, and a short run.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from optim import build_optimizer
from test_optim_kronecker import CONTRACT, augmented, batch, tiny_gpt, train_step  # the tiny GPT and helpers the optimizer tests share

def per_token_gradients(layer, X, Y):
    """(M, d_out, d_in + 1): each token's gradient [dl_m/dW | dl_m/db] of a one-layer model, by torch.func."""
    from torch.func import functional_call, grad, vmap
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss_one(p, x, y):
        return F.cross_entropy(functional_call(layer, p, (x[None],)), y[None])
    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, X.reshape(-1, X.shape[-1]), Y.reshape(-1))
    return torch.cat([g['weight'], g['bias'][:, :, None]], 2)


def test_s_equals_brute_force_second_moments_in_the_eigenbasis():
    torch.manual_seed(0)
    layer = nn.Linear(6, 5).double()
    X, Y = torch.randn(2, 7, 6, dtype=torch.float64), torch.randint(0, 5, (2, 7))
    grads = per_token_gradients(layer, X, Y)
    opt = build_optimizer('ekfac', layer, lr=0.0, **CONTRACT)
    logits = layer(X)
    opt.backward(F.cross_entropy(logits.reshape(-1, 5), Y.reshape(-1)), logits)
    opt.step()
    st = opt.layer_state['']
    brute = (st['Q_G'].T @ grads @ st['Q_A']).square().mean(0)  # E_m[(Q_G^T g_m a_m^T Q_A)^2]
    torch.testing.assert_close(st['s'], brute, rtol=1e-10, atol=1e-14)
    assert 'rows' not in st  # the per-token rows live for one step only


def test_step_is_minus_lr_times_the_damped_inverse():
    """DESIGN.md's contract: W moves by -lr (Q diag(vec s) Q^T + lambda I)^-1 vec(V), Q = Q_A (x) Q_G."""
    gpt, (X, Y) = tiny_gpt(), batch(0)
    lr, damping = 0.05, 1e-2
    opt = build_optimizer('ekfac', gpt, lr=lr, damping=damping, **CONTRACT)
    logits, loss = gpt(X, Y)
    opt.backward(loss, logits)
    layers = {n: gpt.get_submodule(n) for n in opt.modules_}
    before = {n: (augmented(m), augmented(m, use_grad=True)) for n, m in layers.items()}
    opt.step()
    for n, st in opt.layer_state.items():
        W0, V = before[n]
        Q = torch.kron(st['Q_A'], st['Q_G'])
        dense = Q @ torch.diag(st['s'].T.reshape(-1)) @ Q.T + damping * torch.eye(Q.shape[0], dtype=Q.dtype)
        U = torch.linalg.solve(dense, V.T.reshape(-1)).reshape(V.shape[1], V.shape[0]).T
        torch.testing.assert_close(augmented(layers[n]) - W0, -lr * U, rtol=1e-8, atol=1e-12,
                                   msg=lambda m: f'{n}: {m}')


def layer_rows(gpt, name, X, Y):
    """(a, g_hat) of one layer on a batch, by hand: its input with a 1 appended, and M times its output gradient."""
    seen = {}

    def forward_hook(module, inputs, output):
        seen['a'] = inputs[0].detach().reshape(-1, module.in_features)
        output.register_hook(lambda grad: seen.update(g=grad.reshape(-1, grad.shape[-1]) * grad[..., 0].numel()))
    handle = gpt.get_submodule(name).register_forward_hook(forward_hook)
    gpt(X, Y)[1].backward()
    handle.remove()
    gpt.zero_grad(set_to_none=True)
    return torch.cat([seen['a'], torch.ones_like(seen['a'][:, :1])], 1), seen['g']


def test_s_is_averaged_between_eigenbases_and_restarts_with_a_new_one():
    from optim.ekfac import eigenbasis_moments
    gpt, name = tiny_gpt(), 'transformer.h.0.mlp.c_fc'
    opt = build_optimizer('ekfac', gpt, lr=0.0, **dict(CONTRACT, factor_decay=0.5, inv_update_freq=2))
    seen = []
    for k in range(3):  # eigh, refresh, eigh
        train_step(opt, gpt, *batch(k))
        st = opt.layer_state[name]
        seen.append((st['s'].clone(), st['Q_A'].clone(), st['Q_G'].clone()))
    moments = [eigenbasis_moments(*layer_rows(gpt, name, *batch(k)), Q_A, Q_G) for k, (_, Q_A, Q_G) in
               enumerate(seen)]
    torch.testing.assert_close(seen[0][0], moments[0], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(seen[1][1], seen[0][1])  # no new eigenbasis on step 1
    torch.testing.assert_close(seen[1][0], 0.5 * seen[0][0] + 0.5 * moments[1], rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(seen[2][0], moments[2], rtol=1e-10, atol=1e-14)


def test_short_run_trains():
    gpt, (X, Y) = tiny_gpt(), batch(0)
    opt = build_optimizer('ekfac', gpt, lr=0.02, factor_update_freq=2, inv_update_freq=4, kl_clip=1e-2,
                          weight_decay=0.0)
    losses = [train_step(opt, gpt, X, Y) for _ in range(20)]
    assert losses[-1] < losses[0] - 0.3
