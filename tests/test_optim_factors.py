"""
Factor capture of optim/capture.py against independent references: curvlinops' KFAC (expand setting, mean
reduction) on a tiny GPT and a tiny MLP with an in-place activation, and factors built by hand from per-token
gradients computed with torch.func. Then the traps: attention projections hooked, tied head not, eval passes
ignored, hooks removed on steps that update no factor, .grad untouched, micro-steps = one big step, torch.compile.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from model import GPT, GPTConfig
from optim import build_optimizer
from optim.eva import EVA

FISHERS = ['empirical', 'sampled']
EXACT = dict(lr=0.0, momentum=0.0, weight_decay=0.0, kl_clip=None, factor_decay=0.0, factor_update_freq=1,
             inv_update_freq=1)  # one step's factors, weights unchanged


def tiny_gpt(seed=0, n_layer=2, bias=True):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=n_layer, n_head=2, n_embd=8, bias=bias)).double()


def tokens(B=3, T=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 13, (B, T), generator=g), torch.randint(0, 13, (B, T), generator=g)


def capture(opt, forward, label_seed=7, micro=1):
    """One optimizer step on forward() -> (logits, loss); sampled labels drawn right after seeding label_seed."""
    for _ in range(micro):
        logits, loss = forward()
        torch.manual_seed(label_seed)
        opt.backward(loss / micro, logits, 1.0 / micro)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt.factors()


def draw_like_optimizer(seed):
    """curvlinops' label sampler replaced by the optimizer's draw (same seed, same probabilities)."""
    def draw(output):  # (B*T, C)
        torch.manual_seed(seed)
        return torch.multinomial(output.softmax(1), 1).squeeze(-1)
    return draw


def curvlinops_factors(model, layer_names, X, Y, fisher, prefix='', kfac_approx='expand'):
    from curvlinops import KFACLinearOperator
    params = [p for n in layer_names for p in model.get_submodule(prefix + n).parameters()]
    op = KFACLinearOperator(model, nn.CrossEntropyLoss(), params, [(X, Y)], fisher_type=dict(
        empirical='empirical', sampled='mc')[fisher], kfac_approx=kfac_approx, num_per_example_loss_terms=Y.shape[1],
        separate_weight_and_bias=False, num_data=Y.shape[0], check_deterministic=False)
    op.draw_label = draw_like_optimizer(7)
    op.compute_kronecker_factors()
    sd = op.state_dict()
    return {n: (sd['input_covariances'][prefix + n], sd['gradient_covariances'][prefix + n]) for n in layer_names}


class LogitsFirst(nn.Module):
    """(B, T, C) logits of net as (B, C, T), the layout curvlinops' CrossEntropyLoss expects; parameters are
    named net.<name>."""

    def __init__(self, net, logits_of):
        super().__init__()
        self.net, self.logits_of = net, logits_of

    def forward(self, x):
        return self.logits_of(self.net, x).transpose(1, 2)


def assert_factors_close(mine, ref):
    assert set(mine) == set(ref)
    for name in ref:
        for f, a, b in zip('AG', mine[name], ref[name]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14, msg=lambda m: f'{name}.{f}: {m}')


@pytest.mark.parametrize('approx', ['expand', 'reduce'])
@pytest.mark.parametrize('fisher', FISHERS)
def test_gpt_factors_match_curvlinops(fisher, approx):
    """Both settings against curvlinops' KFACType.EXPAND and .REDUCE (reduce: a sequence's mean input and its
    output gradients' sum / sqrt(T), optim/capture.py)."""
    pytest.importorskip('curvlinops')
    gpt, (X, Y) = tiny_gpt(), tokens()
    opt = build_optimizer('kfac', gpt, fisher=fisher, kfac_approx=approx, **EXACT)
    mine = capture(opt, lambda: gpt(X, Y))
    ref_model = LogitsFirst(gpt, lambda net, idx: net(idx, torch.zeros_like(idx))[0])
    assert_factors_close(mine, curvlinops_factors(ref_model, list(mine), X, Y, fisher, prefix='net.',
                                                  kfac_approx=approx))


class MLP(nn.Module):
    def __init__(self, inplace=False):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.act = nn.ReLU(inplace=inplace)  # in place, it rewrites fc1's output: the hook traps
        self.fc2 = nn.Linear(7, 6, bias=False)
        self.fc3 = nn.Linear(6, 4)

    def forward(self, x):  # (B, T, 5) -> (B, T, 4)
        return self.fc3(torch.tanh(self.fc2(self.act(self.fc1(x)))))


def mlp_factors(fisher, inplace, approx='expand'):
    torch.manual_seed(0)
    mlp = MLP(inplace).double()
    X, Y = torch.randn(3, 4, 5, dtype=torch.float64), torch.randint(0, 4, (3, 4))

    def forward():
        logits = mlp(X)
        return logits, F.cross_entropy(logits.reshape(-1, 4), Y.reshape(-1))
    opt = build_optimizer('kfac', mlp, fisher=fisher, kfac_approx=approx, **EXACT)
    return capture(opt, forward), (mlp, X, Y)


@pytest.mark.parametrize('approx', ['expand', 'reduce'])
@pytest.mark.parametrize('fisher', FISHERS)
def test_mlp_factors_match_curvlinops(fisher, approx):
    pytest.importorskip('curvlinops')
    mine, (mlp, X, Y) = mlp_factors(fisher, inplace=False, approx=approx)
    assert set(mine) == {'fc1', 'fc2', 'fc3'}
    ref_model = LogitsFirst(mlp, lambda net, x: net(x))
    assert_factors_close(mine, curvlinops_factors(ref_model, list(mine), X, Y, fisher, prefix='net.',
                                                  kfac_approx=approx))


@pytest.mark.parametrize('fisher', FISHERS)
def test_inplace_activation_leaves_factors_unchanged(fisher):
    """ReLU(inplace=True) on a (B, T, d) output, a view of F.linear's matmul: hooks on the view would be dropped
    (curvlinops 3.0.1 loses fc1's G here)."""
    assert_factors_close(mlp_factors(fisher, inplace=True)[0], mlp_factors(fisher, inplace=False)[0])


def per_token_factors(layer, X, labels):
    """(a, g_hat) per token of a one-layer model, g_hat from per-token gradients of the bias by torch.func; also
    checks that the per-token weight gradient is g_hat a^T, the Kronecker structure the factors rest on."""
    from torch.func import functional_call, grad, vmap
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss_one(p, x, y):  # one token's loss l_m
        return F.cross_entropy(functional_call(layer, p, (x[None],)), y[None])
    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, X.reshape(-1, X.shape[-1]), labels.reshape(-1))
    a = torch.cat([X.reshape(-1, X.shape[-1]), torch.ones(labels.numel(), 1, dtype=X.dtype)], 1)
    g = grads['bias']  # (M, d_out)
    torch.testing.assert_close(grads['weight'], g[:, :, None] * a[:, None, :-1])
    return a, g


@pytest.mark.parametrize('fisher', FISHERS)
def test_one_layer_factors_match_per_token_gradients(fisher):
    def layer():
        torch.manual_seed(0)
        return nn.Linear(6, 5).double()
    X, Y = torch.randn(2, 7, 6, dtype=torch.float64), torch.randint(0, 5, (2, 7))
    labels = Y if fisher == 'empirical' else draw_like_optimizer(7)(layer()(X).detach().reshape(-1, 5))
    a, g = per_token_factors(layer(), X, labels)
    M = a.shape[0]

    def forward_of(net):
        def forward():
            logits = net(X)
            return logits, F.cross_entropy(logits.reshape(-1, 5), Y.reshape(-1))
        return forward
    net = layer()
    A, G = capture(build_optimizer('kfac', net, fisher=fisher, **EXACT), forward_of(net))['']
    torch.testing.assert_close(A, a.T @ a / M)
    torch.testing.assert_close(G, g.T @ g / M)
    net = layer()
    a_bar, g_bar = capture(EVA(net, fisher=fisher, **EXACT), forward_of(net))['']  # EVA's vectors: token means
    torch.testing.assert_close(a_bar, a.mean(0))
    torch.testing.assert_close(g_bar, g.mean(0))


def test_kronecker_product_is_the_exact_fisher_of_one_token():
    """One token: F = E[vec(dW) vec(dW)^T] is exactly A (x) G, with vec stacking columns (DESIGN.md)."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    X, Y = torch.randn(1, 1, 4, dtype=torch.float64), torch.randint(0, 3, (1, 1))
    a, g = per_token_factors(layer, X, Y)

    def forward():
        logits = layer(X)
        return logits, F.cross_entropy(logits.reshape(-1, 3), Y.reshape(-1))
    A, G = capture(build_optimizer('kfac', layer, **EXACT), forward)['']
    v = (g[0][:, None] * a[0][None, :]).T.reshape(-1)  # vec([dW | db]), columns stacked
    torch.testing.assert_close(torch.kron(A, G), torch.outer(v, v))


def test_attention_projections_are_hooked_and_tied_head_is_not():
    gpt, (X, Y) = tiny_gpt(), tokens()
    opt = build_optimizer('fixed_fisher', gpt, **EXACT)
    factors = capture(opt, lambda: gpt(X, Y))
    expected = {f'transformer.h.{i}.{m}' for i in range(2)
                for m in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')}
    assert set(factors) == expected
    A, G = factors['transformer.h.0.attn.c_attn']
    assert A.shape == (9, 9) and G.shape == (24, 24) and A.abs().sum() > 0 and G.abs().sum() > 0
    adamw = {p for g in opt.param_groups if g['kind'] == 'adamw' for p in g['params']}
    assert gpt.lm_head.weight in adamw and gpt.transformer.wpe.weight in adamw


def test_construction_logs_preconditioned_and_adamw_layers(capsys):
    build_optimizer('kfac', tiny_gpt(n_layer=1))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith('KFAC: preconditioned (4): transformer.h.0.attn.c_attn')
    assert out[1].startswith('KFAC: AdamW') and 'lm_head (tied with transformer.wte)' in out[1]


def test_hooks_are_removed_on_steps_that_update_no_factor():
    gpt, (X, Y) = tiny_gpt(n_layer=1), tokens()
    opt = build_optimizer('kfac', gpt, factor_update_freq=3)
    linear = gpt.transformer.h[0].mlp.c_fc
    armed = []
    for _ in range(4):
        armed.append(len(linear._forward_hooks))
        logits, loss = gpt(X, Y)
        opt.backward(loss, logits)
        opt.step()
        opt.zero_grad()
    assert armed == [1, 0, 0, 1]


def test_eval_and_no_grad_forwards_record_nothing():
    gpt, (X, Y) = tiny_gpt(n_layer=1), tokens()
    opt = build_optimizer('kfac', gpt, **EXACT)
    ref = capture(opt, lambda: gpt(X, Y))
    ref = {n: tuple(t.clone() for t in f) for n, f in ref.items()}

    def forward_with_evals():
        gpt.eval()
        gpt(X[:, :2], Y[:, :2])
        gpt.train()
        with torch.no_grad():
            gpt(X[:1], Y[:1])
        return gpt(X, Y)
    assert_factors_close(capture(opt, forward_with_evals), ref)


@pytest.mark.parametrize('fisher', FISHERS)
def test_backward_leaves_grads_unchanged(fisher):
    gpt, (X, Y) = tiny_gpt(), tokens()
    _, loss = gpt(X, Y)
    (loss * 0.5).backward()
    ref = {n: p.grad.clone() for n, p in gpt.named_parameters()}
    gpt.zero_grad(set_to_none=True)
    opt = build_optimizer('kfac', gpt, fisher=fisher)
    logits, loss = gpt(X, Y)
    opt.backward(loss * 0.5, logits, 0.5)
    for n, p in gpt.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=0, atol=0)


@pytest.mark.parametrize('name', ['kfac', 'fixed_fisher', 'eva', 'ekfac', 'ief'])
def test_two_micro_steps_of_half_batch_equal_one_step(name):
    X, Y = tokens(B=4)
    cfg = dict(EXACT, lr=0.1)
    runs = []
    for micro in (1, 2):
        gpt = tiny_gpt(n_layer=1)
        opt = build_optimizer(name, gpt, **cfg)
        halves = iter(zip(X.chunk(micro), Y.chunk(micro)))
        factors = capture(opt, lambda: gpt(*next(halves)), micro=micro)
        runs.append((factors, [p.detach().clone() for p in gpt.parameters()]))
    assert_factors_close(runs[1][0], runs[0][0])
    for p1, p2 in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(p2, p1, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize('fisher', FISHERS)
def test_compiled_model_gives_the_eager_factors(fisher):
    """The hooks survive torch.compile (graph breaks at them on factor-update steps); about a minute on 2 CPUs."""
    X, Y = tokens()
    results = []
    for compile in (False, True):
        gpt = tiny_gpt(n_layer=1)
        opt = build_optimizer('kfac', gpt, fisher=fisher, **EXACT)
        model = torch.compile(gpt) if compile else gpt
        results.append(capture(opt, lambda: model(X, Y)))
    assert_factors_close(results[1], results[0])


def test_hooks_go_away_with_the_optimizer():
    gpt = tiny_gpt(n_layer=1)
    opt = build_optimizer('eva', gpt)
    assert len(gpt.transformer.h[0].mlp.c_fc._forward_hooks) == 1
    del opt
    assert len(gpt.transformer.h[0].mlp.c_fc._forward_hooks) == 0


@pytest.mark.parametrize('fisher', FISHERS)
def test_bfloat16_autocast_gives_float32_factors(fisher):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=2, n_embd=8))
    X, Y = tokens()
    opt = build_optimizer('kfac', gpt, fisher=fisher, **EXACT)

    def forward():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return gpt(X, Y)
    factors = capture(opt, forward)
    assert len(factors) == 4
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for f in factors.values() for t in f)


def test_reduce_keeps_one_row_per_sequence_and_refuses_what_needs_tokens():
    """kfac_approx='reduce' captures N = B rows, not M = B T: the rows a method keeps (EKFAC's) are the sequences',
    and the factors their means; iEF and iEKFAC, built on per-token rows, refuse it; a typo names the choices."""
    gpt, (X, Y) = tiny_gpt(), tokens()  # B = 3 sequences of T = 5 tokens
    opt = build_optimizer('ekfac', gpt, kfac_approx='reduce', **EXACT)
    gpt(X, Y)[1].backward()
    factors = opt.capture.take()
    for name, (a, g) in opt.capture.rows.items():
        assert a.shape[0] == g.shape[0] == 3
        torch.testing.assert_close(factors[name][0], a.T @ a / 3, rtol=1e-12, atol=0)
        torch.testing.assert_close(factors[name][1], g.T @ g / 3, rtol=1e-12, atol=0)
    for name in ('ief', 'iekfac'):
        with pytest.raises(ValueError, match="kfac_approx must be 'expand'"):
            build_optimizer(name, tiny_gpt(), kfac_approx='reduce')
    with pytest.raises(ValueError, match='unknown kfac_approx'):
        build_optimizer('kfac', tiny_gpt(), kfac_approx='reduced')
