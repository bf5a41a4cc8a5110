"""GPT in model.py: shapes, initial loss, a step that learns, generation, parameter count, bad config."""
import math

import pytest
import torch

from model import GPT, GPTConfig
from optim import build_optimizer

TINY = dict(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)


def tiny_gpt(**overrides):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides}))


def test_output_shapes():
    model = tiny_gpt()
    idx = torch.randint(0, 65, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 65) and loss.shape == ()
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 65) and loss is None  # inference: last position only


def test_initial_loss_is_log_vocab():
    model = tiny_gpt()
    g = torch.Generator().manual_seed(1)
    idx, targets = torch.randint(0, 65, (8, 16), generator=g), torch.randint(0, 65, (8, 16), generator=g)
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(65)) < 0.05  # near-uniform predictions at initialisation


def test_one_adamw_step_lowers_loss_on_fixed_batch():
    model = tiny_gpt()
    idx = torch.randint(0, 65, (4, 16), generator=torch.Generator().manual_seed(2))
    opt = build_optimizer('adamw', model, lr=1e-2, weight_decay=0.0)
    _, loss0 = model(idx[:, :-1], idx[:, 1:])
    loss0.backward()
    opt.step()
    _, loss1 = model(idx[:, :-1], idx[:, 1:])
    assert loss1.item() < loss0.item() - 1e-3


def test_parameter_count_matches_hand_count():
    model = tiny_gpt()
    d, L, V, T = 32, 2, 65, 16
    per_block = 2 * (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    total = V * d + T * d + L * per_block + 2 * d  # wte (tied with lm_head), wpe, blocks, ln_f
    assert model.get_num_params(non_embedding=False) == total
    assert model.get_num_params() == total - T * d


def test_estimate_mfu_follows_palm_formula():
    model = tiny_gpt()
    N = model.get_num_params()
    flops = (6 * N + 12 * 2 * 2 * 16 * 16) * 16 * 4  # per token x tokens per sequence x 4 sequences
    assert model.estimate_mfu(4, dt=0.5, peak_flops=1e9) == pytest.approx(flops / 0.5 / 1e9)


def test_generate_respects_max_new_tokens_and_top_k():
    model = tiny_gpt().eval()
    prompt = torch.randint(0, 65, (2, 5), generator=torch.Generator().manual_seed(3))
    for top_k in (1, 3):
        torch.manual_seed(4)
        out = model.generate(prompt, max_new_tokens=20, top_k=top_k)  # 25 > block_size: the context is cropped
        assert out.shape == (2, 25) and torch.equal(out[:, :5], prompt)
        for t in range(5, 25):
            context = out[:, max(0, t - 16):t]
            logits = model(context)[0][:, -1, :]
            allowed = logits.topk(top_k, dim=-1).indices
            assert (allowed == out[:, t:t + 1]).any(dim=-1).all(), f"token {t} outside the top {top_k}"
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 2, temperature=0.0)


def test_unknown_attention_and_long_input_are_errors():
    with pytest.raises(ValueError, match="unknown attention 'bogus'"):
        GPTConfig(attention='bogus')
    with pytest.raises(ValueError, match="block_size 16"):
        tiny_gpt()(torch.zeros(1, 17, dtype=torch.long))
