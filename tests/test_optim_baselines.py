"""
The baselines a user would pick instead of a Kronecker method: muon (torch.optim.Muon + AdamW, optim/muon.py) and
soap (pytorch-optimizer's SOAP, optim/soap.py). Their split of the parameters, Muon's update against torch's own,
training, and exact resume from a state_dict.
"""

import io

import pytest
import torch

from model import GPT, GPTConfig
from optim import build_optimizer, optimizer_kwargs
from optim.muon import MuonAdamW


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=2, n_head=2, n_embd=16, bias=True))


def batch(seed, B=4, T=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 13, (B, T), generator=g), torch.randint(0, 13, (B, T), generator=g)


def train_step(opt, model, X, Y, lr):
    for group in opt.param_groups:  # as train.py sets it every iteration
        group['lr'] = lr * group.get('lr_scale', 1.0)
    _, loss = model(X, Y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def test_muon_takes_block_matrices_and_adamw_the_rest():
    model = tiny_gpt()
    opt = build_optimizer('muon', model, lr=1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for g in opt.muon.param_groups for p in g['params']]
    rest = [names[id(p)] for g in opt.adamw.param_groups for p in g['params']]
    assert muon and all(n.startswith('transformer.h.') and n.endswith('.weight') for n in muon)
    assert 'transformer.h.0.mlp.c_fc.weight' in muon and 'transformer.wte.weight' in rest  # wte is the tied head
    assert sorted(muon + rest) == sorted(names.values())  # every parameter once
    assert [g['params'] for g in opt.param_groups] == [g['params'] for g in opt.muon.param_groups +
                                                       opt.adamw.param_groups]


def test_muon_update_equals_torch_muon_and_adamw():
    """One step of MuonAdamW == torch.optim.Muon on the block matrices and torch.optim.AdamW on the rest, given the
    same gradients, with Muon's lr = lr * muon_lr_scale."""
    model = tiny_gpt()
    X, Y = batch(0)
    _, loss = model(X, Y)
    loss.backward()
    lr, scale = 1e-2, 3.0
    opt = MuonAdamW(model, lr=lr, weight_decay=0.1, momentum=0.95, muon_lr_scale=scale, ns_dtype='bfloat16')
    refs = {}
    for group in opt.muon.param_groups + opt.adamw.param_groups:
        for p in group['params']:
            refs[p] = p.detach().clone().requires_grad_()
            refs[p].grad = p.grad.clone()
    muon_params = [refs[p] for g in opt.muon.param_groups for p in g['params']]
    ref_muon = torch.optim.Muon(muon_params, lr=lr * scale, weight_decay=0.1, momentum=0.95,
                                adjust_lr_fn='match_rms_adamw')
    ref_adamw = torch.optim.AdamW([{'params': [refs[p] for p in g['params']], 'weight_decay': g['weight_decay']}
                                   for g in opt.adamw.param_groups], lr=lr, betas=(0.9, 0.95))
    for group in opt.param_groups:
        group['lr'] = lr * group.get('lr_scale', 1.0)
    assert opt.muon.param_groups[0]['lr'] == lr * scale
    opt.step()
    ref_muon.step()
    ref_adamw.step()
    for p, ref in refs.items():
        assert torch.equal(p.detach(), ref.detach())
    assert any(not torch.equal(p.detach(), p0) for p, p0 in zip(model.parameters(), tiny_gpt().parameters()))


def test_muon_float32_newton_schulz_matches_a_float64_iteration():
    """ns_dtype='float32' (the CPU default) runs torch's quintic iteration X <- aX + (b XX^T + c (XX^T)^2) X in
    float32: the first step's update of a weight equals the same iteration in float64 to float32 accuracy, and is
    closer to it than torch's bfloat16 one; torch's own function is back in place after the step."""
    def newton_schulz64(G, a=3.4445, b=-4.7750, c=2.0315):
        X = G.double().T if G.shape[0] > G.shape[1] else G.double()
        X = X / X.norm()
        for _ in range(5):
            S = X @ X.T
            X = a * X + (b * S + c * S @ S) @ X
        return X.T if G.shape[0] > G.shape[1] else X

    before = torch.optim._muon._zeropower_via_newtonschulz
    updates = {}
    for ns_dtype in ('float32', 'bfloat16'):
        model = tiny_gpt()
        _, loss = model(*batch(0))
        loss.backward()
        W = model.transformer.h[0].mlp.c_fc.weight  # (4 n_embd, n_embd): the transposed branch
        W0, grad = W.detach().clone(), W.grad.clone()
        opt = MuonAdamW(model, lr=1e-2, weight_decay=0.0, momentum=0.95, ns_dtype=ns_dtype)
        opt.step()
        lr_adj = 0.2 * max(W.shape) ** 0.5 * 1e-2  # match_rms_adamw
        updates[ns_dtype] = (W0 - W.detach()).double() / lr_adj
        assert torch.optim._muon._zeropower_via_newtonschulz is before
    # the first Nesterov step orthogonalises grad.lerp(buf, 0.95) with buf = 0.05 grad: 0.0975 grad (scale-free)
    ref = newton_schulz64(grad)
    err32 = (updates['float32'] - ref).abs().max().item()
    err16 = (updates['bfloat16'] - ref).abs().max().item()
    assert err32 < 1e-4 < err16, (err32, err16)
    with pytest.raises(ValueError, match="unknown ns_dtype 'float16'"):
        MuonAdamW(tiny_gpt(), ns_dtype='float16')


def test_config_globals_reach_the_baselines():
    config = dict(lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.99, momentum=0.95, damping=1e-3,
                  inv_update_freq=5, max_factor_dim=64, muon_lr_scale=2.0)
    assert optimizer_kwargs('muon', config) == dict(lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.99,
                                                    momentum=0.95, muon_lr_scale=2.0)
    assert optimizer_kwargs('soap', config) == dict(lr=1e-3, weight_decay=0.0, beta1=0.9, beta2=0.99,
                                                    inv_update_freq=5, max_factor_dim=64)
    opt = build_optimizer('soap', tiny_gpt(), **optimizer_kwargs('soap', config))
    assert opt.param_groups[0]['precondition_frequency'] == 5 and opt.param_groups[0]['max_precondition_dim'] == 64


def test_soap_decays_only_matrices():
    opt = build_optimizer('soap', tiny_gpt(), lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and all(p.dim() == 2 for p in decay['params'])
    assert no_decay['weight_decay'] == 0.0 and all(p.dim() == 1 for p in no_decay['params'])


@pytest.mark.parametrize('name, lr', [('muon', 1e-2), ('soap', 1e-2)])
def test_steps_lower_the_loss(name, lr):
    model = tiny_gpt()
    opt = build_optimizer(name, model, lr=lr, weight_decay=0.0)
    X, Y = batch(0)
    losses = [train_step(opt, model, X, Y, lr) for _ in range(15)]
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.parametrize('name', ['muon', 'soap'])
def test_state_dict_round_trip_resumes_identically(name):
    """6 straight steps == 3 steps, a checkpoint (torch.save of model and optimizer) into a new model and
    optimizer, 3 more steps: the same weights bit for bit."""
    lr = 1e-2
    straight = tiny_gpt()
    opt = build_optimizer(name, straight, lr=lr)
    for i in range(6):
        train_step(opt, straight, *batch(i), lr)

    first = tiny_gpt()
    opt = build_optimizer(name, first, lr=lr)
    for i in range(3):
        train_step(opt, first, *batch(i), lr)
    buffer = io.BytesIO()
    torch.save({'model': first.state_dict(), 'optimizer': opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    resumed = tiny_gpt(seed=1)  # other initial weights: everything must come from the checkpoint
    resumed.load_state_dict(checkpoint['model'])
    opt = build_optimizer(name, resumed, lr=lr)
    opt.load_state_dict(checkpoint['optimizer'])
    for i in range(3, 6):
        train_step(opt, resumed, *batch(i), lr)
    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_muon_rejects_a_foreign_state_dict():
    model = tiny_gpt()
    opt = build_optimizer('muon', model, lr=1e-3)
    with pytest.raises(ValueError, match='not a MuonAdamW state_dict'):
        opt.load_state_dict(build_optimizer('adamw', model, lr=1e-3).state_dict())
