"""
The PSGD-Kron baseline (optim/psgd.py): heavyball's PSGDKron on the blocks' matrices, AdamW on the rest. Its split,
its update against heavyball's own, training, the learning rate train.py schedules, ranks seeded differently
fitting the same preconditioner, and an exact resume through checkpoint.py (weights_only=True).
"""

import warnings

import heavyball
import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from optim import build_optimizer, optimizer_kwargs
from optim.psgd import PSGDAdamW, heavyball_compile
from test_optim_baselines import batch, tiny_gpt, train_step  # the baselines' tiny GPT and train.py-like step


def psgd_weights(opt):
    return [p for g in opt.psgd.param_groups for p in g['params']]


def test_psgd_takes_block_matrices_and_adamw_the_rest():
    model = tiny_gpt()
    opt = build_optimizer('psgd', model, lr=1e-3)
    assert isinstance(opt, PSGDAdamW) and isinstance(opt.psgd, heavyball.PSGDKron)
    assert isinstance(opt.adamw, torch.optim.AdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    psgd = [names[id(p)] for p in psgd_weights(opt)]
    rest = [names[id(p)] for g in opt.adamw.param_groups for p in g['params']]
    assert psgd and all(n.startswith('transformer.h.') and n.endswith('.weight') for n in psgd)
    assert 'transformer.h.0.mlp.c_fc.weight' in psgd and 'transformer.wte.weight' in rest  # wte is the tied head
    assert 'transformer.h.0.ln_1.weight' in rest and 'transformer.h.0.attn.c_attn.bias' in rest
    assert sorted(psgd + rest) == sorted(names.values())  # every parameter once
    assert [g['params'] for g in opt.param_groups] == [g['params'] for g in opt.psgd.param_groups +
                                                       opt.adamw.param_groups]
    assert opt.compile is False  # 'auto': eager on a CPU


def test_psgd_update_equals_heavyballs_psgdkron_and_adamw():
    """Two steps of PSGDAdamW == heavyball.PSGDKron on the block matrices (global RNG seeded as PSGDAdamW's seed, so
    the same probe vectors) and torch.optim.AdamW on the rest, given the same gradients: it is heavyball that runs."""
    lr, wd, seed = 1e-2, 0.1, 5
    model = tiny_gpt()
    opt = PSGDAdamW(model, lr=lr, weight_decay=wd, beta1=0.9, beta2=0.95, seed=seed)
    refs = {p: p.detach().clone().requires_grad_() for g in opt.param_groups for p in g['params']}
    initial = [p.detach().clone() for p in psgd_weights(opt)]
    ref_psgd = heavyball.PSGDKron([refs[p] for p in psgd_weights(opt)], lr=lr, beta=0.9, weight_decay=wd)
    ref_adamw = torch.optim.AdamW([{'params': [refs[p] for p in g['params']], 'weight_decay': g['weight_decay']}
                                   for g in opt.adamw.param_groups], lr=lr, betas=(0.9, 0.95))
    torch.manual_seed(seed)
    ref_rng = torch.get_rng_state()
    for i in range(2):
        _, loss = model(*batch(i))
        loss.backward()
        for p, ref in refs.items():
            ref.grad = p.grad.clone()
        torch.manual_seed(100 + i)  # the global RNG, which PSGDAdamW must neither use nor move
        outer = torch.get_rng_state()
        opt.step()
        assert torch.equal(torch.get_rng_state(), outer)
        opt.zero_grad(set_to_none=True)
        torch.set_rng_state(ref_rng)
        with heavyball_compile(False):
            ref_psgd.step()
        ref_rng = torch.get_rng_state()
        ref_adamw.step()
        for p, ref in refs.items():
            assert torch.equal(p.detach(), ref.detach())
    assert all(any(k.startswith('scale_by_psgd_Q') for k in opt.psgd.state[p][0]) for p in psgd_weights(opt))
    assert not any(torch.equal(p.detach(), p0) for p, p0 in zip(psgd_weights(opt), initial))  # every matrix moved


def test_psgd_trains_the_tiny_gpt():
    model = tiny_gpt()
    opt = build_optimizer('psgd', model, lr=1e-2, weight_decay=0.0)
    X, Y = batch(0)
    losses = [train_step(opt, model, X, Y, 1e-2) for _ in range(30)]
    assert losses[-1] < losses[0] - 1.0, losses  # 2.60 -> 0.81


def test_learning_rate_comes_from_the_param_groups():
    """lr 0 in every group (as train.py sets it) leaves every weight as it was, the preconditioner still fitted;
    the lr set is the lr used, with no warning from heavyball that it changed, and is still there after the step."""
    model = tiny_gpt()
    opt = build_optimizer('psgd', model, lr=1e-2, weight_decay=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for i in range(3):
            train_step(opt, model, *batch(i), lr=0.0)
        assert all(torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))
        assert all(g['lr'] == 0.0 for g in opt.param_groups)
        assert all(any(k.startswith('scale_by_psgd_Q') for k in opt.psgd.state[p][0]) for p in psgd_weights(opt))
        W = psgd_weights(opt)[0]
        W0 = W.detach().clone()
        train_step(opt, model, *batch(3), lr=1e-2)
    assert not torch.equal(W, W0) and all(g['lr'] == 1e-2 for g in opt.param_groups)


def test_ranks_seeded_differently_fit_the_same_preconditioner():
    """train.py seeds torch's global RNG by rank; PSGD's probes come from the optimizer's own generator (seed), so
    two ranks with the same gradients end with the same weights, and a different seed gives different ones."""
    def run(global_seed, seed=1337):
        model = tiny_gpt()
        opt = build_optimizer('psgd', model, lr=1e-2, seed=seed)
        torch.manual_seed(global_seed)
        for i in range(3):
            train_step(opt, model, *batch(i), lr=1e-2)
        return [p.detach().clone() for p in model.parameters()]

    rank0, rank1, other = run(1337), run(1338), run(1337, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(rank0, rank1))
    assert not all(torch.equal(a, b) for a, b in zip(rank0, other))


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    """6 straight steps == 3 steps, checkpoint.save_checkpoint, load_checkpoint (weights_only=True) into a new model
    and optimizer, 3 more steps: the same weights bit for bit, whatever the global RNG did meanwhile."""
    lr, N = 1e-2, 6
    straight = tiny_gpt()
    opt = build_optimizer('psgd', straight, lr=lr)
    for i in range(N):
        train_step(opt, straight, *batch(i), lr)

    first = tiny_gpt()
    opt = build_optimizer('psgd', first, lr=lr)
    for i in range(N // 2):
        train_step(opt, first, *batch(i), lr)
    state = opt.state_dict()
    assert 'precond_schedule' not in state['psgd']['heavyball']  # heavyball's pickled callable
    path = str(tmp_path / 'ckpt.pt')
    save_checkpoint(dict(model=first.state_dict(), optimizer=state, model_args={}, iter_num=N // 2,
                         best_val_loss=1.0, config=dict(optimizer='psgd')), path)
    checkpoint = load_checkpoint(path)
    resumed = tiny_gpt(seed=1)  # other initial weights: everything must come from the checkpoint
    resumed.load_state_dict(checkpoint['model'])
    opt = build_optimizer('psgd', resumed, lr=lr, seed=2)  # another seed: the generator's state is restored
    opt.load_state_dict(checkpoint['optimizer'])
    torch.manual_seed(12345)
    for i in range(N // 2, N):
        train_step(opt, resumed, *batch(i), lr)
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_load_state_dict_never_unpickles_and_rejects_a_foreign_state_dict():
    model = tiny_gpt()
    opt = build_optimizer('psgd', model, lr=1e-2)
    train_step(opt, model, *batch(0), 1e-2)
    state = opt.state_dict()
    state['psgd']['heavyball']['precond_schedule'] = b'not a pickle'  # heavyball would pickle.loads it
    build_optimizer('psgd', model, lr=1e-2).load_state_dict(state)
    with pytest.raises(ValueError, match='not a PSGDAdamW state_dict'):
        opt.load_state_dict(build_optimizer('adamw', model, lr=1e-3).state_dict())


def test_config_globals_reach_psgd():
    config = dict(lr=1e-3, weight_decay=0.0, beta1=0.8, beta2=0.99, momentum=0.95, damping=1e-3,
                  inv_update_freq=5, max_factor_dim=8, seed=3, compile=True)
    assert optimizer_kwargs('psgd', config) == dict(lr=1e-3, weight_decay=0.0, beta1=0.8, beta2=0.99,
                                                    max_factor_dim=8, seed=3)
    opt = build_optimizer('psgd', tiny_gpt(), **optimizer_kwargs('psgd', config))
    group = opt.psgd.param_groups[0]
    assert group['beta'] == 0.8 and group['max_size_triangular'] == 8 and group['weight_decay'] == 0.0
    assert opt.adamw.param_groups[0]['betas'] == (0.8, 0.99)
    with pytest.raises(ValueError, match="unknown psgd_compile 'yes'"):
        PSGDAdamW(tiny_gpt(), psgd_compile='yes')
