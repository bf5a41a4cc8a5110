"""Linear and delta-rule fast-weight attention (linear_attention.py) and their use in model.py. float64, small."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from linear_attention import (delta_rule_chunked, delta_rule_recurrent, dpfp, elu_plus_one,
                              linear_attention_chunked, linear_attention_recurrent, sum_norm)
from checkpoint import load_checkpoint
from data.common import write_meta
from model import GPT, GPTConfig
from optim import build_optimizer
from test_train import train

B, H, T, D, D_V = 2, 3, 37, 6, 5  # T is a multiple of none of the chunk sizes
CHUNKS = [8, 16, 64]  # 64 > T: one chunk, the fully parallel form


def assert_close(name, ref, got, rtol):
    """Relative error in the max norm, named, so a failure says which tensor and by how much."""
    err = ((ref - got).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    assert err <= rtol, f"{name}: relative error {err:.3g} > {rtol:.1g}"


def make_inputs(keys, seed=0, state=True):
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    if keys == 'dpfp':  # as DeltaAttention makes them: DPFP, sum-normalised, D_k = 2·D
        q, k = sum_norm(dpfp(randn(B, H, T, D))), sum_norm(dpfp(randn(B, H, T, D)))
    else:  # unit L2 keys, as in Yang et al.
        q, k = F.normalize(randn(B, H, T, 2 * D), dim=-1), F.normalize(randn(B, H, T, 2 * D), dim=-1)
    inputs = dict(q=q, k=k, v=randn(B, H, T, D_V), beta=torch.sigmoid(randn(B, H, T)),
                  initial_state=randn(B, H, D_V, 2 * D) if state else None)
    cotangents = (randn(B, H, T, D_V), randn(B, H, D_V, 2 * D))
    return inputs, cotangents


def outputs_and_grads(fn, inputs, cotangents, **kw):
    """fn's (o, state) and the gradients of <o, do> + <state, dstate> w.r.t. every input, by name."""
    inputs = {n: x.clone().requires_grad_() if x is not None else None for n, x in inputs.items()}
    o, S = fn(**inputs, **kw)
    ((o * cotangents[0]).sum() + (S * cotangents[1]).sum()).backward()
    grads = {'d' + n: x.grad for n, x in inputs.items() if x is not None}
    return {'o': o.detach(), 'final_state': S.detach(), **grads}


@pytest.mark.parametrize('chunk_size', CHUNKS, ids=lambda c: f'C{c}')
@pytest.mark.parametrize('keys', ['dpfp', 'l2'])
@pytest.mark.parametrize('state', [True, False], ids=['S0', 'zero_state'])
def test_delta_rule_chunked_matches_recurrent(chunk_size, keys, state):
    inputs, cot = make_inputs(keys, state=state)
    ref = outputs_and_grads(delta_rule_recurrent, inputs, cot)
    got = outputs_and_grads(delta_rule_chunked, inputs, cot, chunk_size=chunk_size)
    names = {'o', 'final_state', 'dq', 'dk', 'dv', 'dbeta'} | ({'dinitial_state'} if state else set())
    assert set(ref) == set(got) == names
    for name in ref:
        assert_close(name, ref[name], got[name], rtol=1e-10)


@pytest.mark.parametrize('chunk_size', CHUNKS, ids=lambda c: f'C{c}')
@pytest.mark.parametrize('state', [True, False], ids=['S0', 'zero_state'])
def test_linear_attention_chunked_matches_recurrent(chunk_size, state):
    inputs, cot = make_inputs('dpfp', state=state)
    del inputs['beta']
    ref = outputs_and_grads(linear_attention_recurrent, inputs, cot)
    got = outputs_and_grads(linear_attention_chunked, inputs, cot, chunk_size=chunk_size)
    for name in ref:
        assert_close(name, ref[name], got[name], rtol=1e-10)


def test_delta_rule_recurrent_follows_definition():
    # one step by hand: S_1 = S_0 + β (v - S_0 k) kᵀ, o_1 = S_1 q
    inputs, _ = make_inputs('dpfp')
    q, k, v, beta, S0 = (inputs[n][:, :, :1] if n != 'initial_state' else inputs[n] for n in inputs)
    S1 = S0 + beta[..., None] * (v[:, :, 0, :, None] - S0 @ k[:, :, 0, :, None]) * k[:, :, 0, None, :]
    o, S = delta_rule_recurrent(q, k, v, beta, S0)
    assert_close('final_state', S1, S, 1e-14)
    assert_close('o', (S1 @ q[:, :, 0, :, None])[..., 0], o[:, :, 0], 1e-14)


def test_beta_one_and_orthonormal_keys_store_exactly():
    # with β = 1 the delta rule overwrites: reading a stored orthonormal key gives back its latest value
    k = torch.eye(4, dtype=torch.float64)[[0, 1, 0]].expand(1, 1, 3, 4)
    v = torch.randn(1, 1, 3, 2, dtype=torch.float64)
    o, S = delta_rule_chunked(k, k, v, torch.ones(1, 1, 3, dtype=torch.float64), chunk_size=2)
    assert_close('S k0', v[0, 0, 2], S[0, 0] @ k[0, 0, 0], 1e-14)
    assert_close('S k1', v[0, 0, 1], S[0, 0] @ k[0, 0, 1], 1e-14)


# -----------------------------------------------------------------------------
# feature maps

@pytest.mark.parametrize('d,nu', [(2, 1), (5, 1), (6, 3), (16, 2)])
def test_dpfp_is_nonnegative_with_dimension_2_d_nu(d, nu):
    x = torch.randn(7, 3, d, dtype=torch.float64)
    phi = dpfp(x, nu)
    assert phi.shape == (7, 3, 2 * d * nu)
    assert (phi >= 0).all()
    assert (elu_plus_one(x) > 0).all()


def test_dpfp_quadrants_in_2d_get_orthogonal_one_hot_features():
    # the paper's 2-D picture: each quadrant owns one feature, so different quadrants are orthogonal
    signs = torch.tensor([[1., 1.], [1., -1.], [-1., 1.], [-1., -1.]], dtype=torch.float64)
    x = signs * torch.rand(4, 2, dtype=torch.float64).add(0.5)
    phi = dpfp(x, nu=1)  # (4, 4)
    assert ((phi > 0).sum(dim=1) == 1).all()
    gram = phi @ phi.T
    assert (gram - torch.diag(gram.diag())).abs().max() == 0
    # r uses ReLU(-x), not -ReLU(x): the all-negative quadrant has a positive feature too
    assert phi[3].sum() > 0


@pytest.mark.parametrize('d,nu', [(3, 1), (8, 2), (16, 3)])
def test_dpfp_opposite_orthants_have_disjoint_supports(d, nu):
    # for d > 2, DPFP separates opposite orthants (x vs -x), though not every pair of different orthants
    x = torch.randn(50, d, dtype=torch.float64)
    assert ((dpfp(x, nu) * dpfp(-x, nu)).sum(-1) == 0).all()


def test_sum_norm_gives_unit_l1_and_survives_zero_features():
    phi = dpfp(torch.randn(10, 8, dtype=torch.float64), 2)
    # float64, but sum_norm's eps = 1e-6 in the denominator leaves 1 - 1e-6 / sum(phi): not rounding
    assert_close('sum', torch.ones(10, dtype=torch.float64), sum_norm(phi).sum(-1), 1e-5)
    zero = dpfp(torch.tensor([1., -1., 1.]))  # alternating signs, odd d: every neighbour product is 0
    assert (zero == 0).all() and torch.isfinite(sum_norm(zero)).all()


# -----------------------------------------------------------------------------
# in the model

def tiny_gpt(attention, chunk_size=8, block_size=32):
    # several chunks at T ~ 30, with a ragged last chunk
    config = GPTConfig(block_size=block_size, vocab_size=13, n_layer=2, n_head=2, n_embd=16, attention=attention,
                       chunk_size=chunk_size)
    torch.manual_seed(0)
    return GPT(config).double().eval()


def all_logits(model, idx):
    idx = idx.contiguous()
    return model(idx, targets=idx)[0]  # with targets, forward returns every position's logits


@pytest.mark.parametrize('attention', ['softmax', 'linear', 'delta'])
def test_changing_later_tokens_never_changes_earlier_outputs(attention):
    model = tiny_gpt(attention)
    idx = torch.randint(13, (2, 29))
    ref = all_logits(model, idx)
    for t in [0, 7, 8, 20, 27]:
        idx2 = idx.clone()
        idx2[:, t + 1:] = torch.randint(13, (2, 28 - t))
        got = all_logits(model, idx2)
        assert_close(f'logits[:{t + 1}]', ref[:, :t + 1], got[:, :t + 1], 1e-12)
        assert (ref[:, t + 1:] != got[:, t + 1:]).any()


@pytest.mark.parametrize('attention', ['linear', 'delta'])
def test_recurrent_generation_state_gives_full_forward_logits(attention):
    model = tiny_gpt(attention)
    idx = torch.randint(13, (2, 30))
    ref = all_logits(model, idx)
    states = None
    for t in range(idx.size(1)):  # token by token, carrying the fast-weight states
        logits, states = model.forward_recurrent(idx[:, t:t + 1], states, pos0=t)
        assert_close(f'logits[{t}]', ref[:, t], logits[:, 0], 1e-10)
    logits, states = model.forward_recurrent(idx[:, :11])  # a prompt in one chunked pass, then steps
    assert_close('logits[10]', ref[:, 10], logits[:, 0], 1e-10)
    for t in range(11, 30):
        logits, states = model.forward_recurrent(idx[:, t:t + 1], states, pos0=t)
        assert_close(f'logits[{t}]', ref[:, t], logits[:, 0], 1e-10)


@pytest.mark.parametrize('attention', ['linear', 'delta'])
def test_generate_past_block_size_samples_like_a_sliding_window(attention):
    # generate's recurrent path must draw the same tokens as full forwards over the last block_size tokens
    model = tiny_gpt(attention, block_size=12)
    prompt = torch.randint(13, (2, 3))
    torch.manual_seed(1)
    got = model.generate(prompt, 20, temperature=0.8, top_k=5)
    torch.manual_seed(1)
    idx = prompt
    for _ in range(20):
        logits = all_logits(model, idx[:, -12:])[:, -1] / 0.8
        v, _ = torch.topk(logits, 5)
        logits[logits < v[:, [-1]]] = -float('Inf')
        idx = torch.cat([idx, torch.multinomial(F.softmax(logits, dim=-1), 1)], dim=1)
    assert torch.equal(got, idx)


@pytest.mark.parametrize('attention', ['softmax', 'linear', 'delta'])
def test_adamw_steps_lower_the_loss(attention):
    model = tiny_gpt(attention).float().train()
    opt = build_optimizer('adamw', model, lr=1e-2)
    idx = torch.randint(13, (4, 24))
    losses = []
    for _ in range(5):
        _, loss = model(idx[:, :-1], targets=idx[:, 1:].contiguous())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# -----------------------------------------------------------------------------
# bad input

def test_unknown_attention_is_an_error():
    with pytest.raises(ValueError, match='unknown attention'):
        GPTConfig(attention='lineer')


@pytest.mark.parametrize('chunk_size', [0, -8, 2.5])
def test_bad_chunk_size_is_an_error(chunk_size):
    inputs, _ = make_inputs('dpfp')
    with pytest.raises(ValueError, match='chunk_size'):
        delta_rule_chunked(**inputs, chunk_size=chunk_size)
    del inputs['beta']
    with pytest.raises(ValueError, match='chunk_size'):
        linear_attention_chunked(**inputs, chunk_size=chunk_size)
    with pytest.raises(ValueError, match='chunk_size'):
        tiny_gpt('delta', chunk_size=chunk_size)


def test_bad_shapes_and_arguments_are_errors():
    inputs, _ = make_inputs('dpfp')
    with pytest.raises(ValueError, match='beta'):
        delta_rule_recurrent(**{**inputs, 'beta': inputs['beta'][..., :-1]})
    with pytest.raises(ValueError, match='initial_state'):
        delta_rule_chunked(**{**inputs, 'initial_state': inputs['initial_state'].transpose(-1, -2)})
    with pytest.raises(ValueError, match='nu'):
        dpfp(torch.randn(3, 4), nu=0)
    with pytest.raises(ValueError, match='softmax'):
        tiny_gpt('softmax').forward_recurrent(torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match='block_size'):
        tiny_gpt('delta', block_size=8).forward_recurrent(torch.zeros(1, 1, dtype=torch.long), pos0=8)


@pytest.mark.parametrize('attention', ['linear', 'delta'])
def test_chunk_size_and_feature_map_are_config_fields(attention, tmp_path):
    """GPTConfig's chunk_size changes how the chunked rule is computed, not what (same logits to float64 rounding);
    feature_map='elu' changes the model; train.py takes both as config keys and keeps them in the checkpoint."""
    idx = torch.randint(0, 13, (2, 30), generator=torch.Generator().manual_seed(1))
    logits = [all_logits(tiny_gpt(attention, chunk_size=c), idx) for c in (4, 8, 32)]
    for other in logits[1:]:
        torch.testing.assert_close(other, logits[0], rtol=1e-10, atol=1e-12)
    config = GPTConfig(block_size=32, vocab_size=13, n_layer=2, n_head=2, n_embd=16, attention=attention,
                       feature_map='elu')
    torch.manual_seed(0)
    assert not torch.allclose(all_logits(GPT(config).double().eval(), idx), logits[0])
    data = tmp_path / 'data'
    data.mkdir()
    for split in ('train', 'val'):
        np.tile(np.arange(12, dtype=np.uint16), 200).tofile(data / f'{split}.bin')
    write_meta(data, [chr(97 + i) for i in range(16)])
    train(data, tmp_path / 'out', f'--attention={attention}', '--feature_map=elu', '--chunk_size=4', '--dpfp_nu=2',
          '--max_iters=2', '--eval_interval=2')
    model_args = load_checkpoint(str(tmp_path / 'out' / 'ckpt.pt'))['model_args']
    assert (model_args['feature_map'], model_args['chunk_size'], model_args['dpfp_nu']) == ('elu', 4, 2)
