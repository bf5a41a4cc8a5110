"""
AdamW (Loshchilov & Hutter, 2019) as nanoGPT configures it: weight decay on the 2-D weights (matmuls and
embeddings) only, none on biases and LayerNorm gains; the fused CUDA kernel where available.
"""

import inspect

import torch


def adamw_param_groups(params, weight_decay):
    """Two groups: 2-D and larger tensors decay, vectors (biases, norms) do not."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.0}]


def adamw(model, lr=6e-4, weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8):
    """torch.optim.AdamW over model.parameters() (tied weights appear once)."""
    groups = adamw_param_groups(model.parameters(), weight_decay)
    on_cuda = all(p.is_cuda for g in groups for p in g['params'])
    fused = on_cuda and 'fused' in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps, fused=fused)


def block_matrices_and_rest(model, weight_decay, who):
    """(the 2-D weights of model.transformer.h: the blocks' attention and MLP matrices, for a matrix optimizer,
    and torch.optim.AdamW over every other parameter: embeddings, the tied lm_head, norms and biases) as Muon and
    PSGD split a GPT (modded-nanogpt's split)."""
    matrices = {id(p) for name, p in model.named_parameters()
                if name.startswith('transformer.h.') and p.dim() == 2 and p.requires_grad}
    if not matrices:
        raise ValueError(f"no 2-D weights under model.transformer.h for {who}")
    return [p for p in model.parameters() if id(p) in matrices], \
        adamw_param_groups([p for p in model.parameters() if id(p) not in matrices], weight_decay)


def adamw_for_the_rest(params, lr, weight_decay, betas, eps, lr_scale):
    """torch.optim.AdamW over the parameters a Kronecker method does not precondition, at lr * lr_scale (each group
    keeps kind='adamw' and lr_scale, which train.py's schedule reads); None if there are none."""
    groups = [dict(g, kind='adamw', lr=lr * lr_scale, lr_scale=lr_scale)
              for g in adamw_param_groups(params, weight_decay) if g['params']]
    if not groups:
        return None
    fused = all(p.is_cuda for g in groups for p in g['params'])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def adam_graft(st, U, V, betas, eps, t):
    """U rescaled to the norm of Adam's update at step t (from 1) for a layer of gradient V, with the layer's own Adam
    moments of V kept in st (exp_avg, exp_avg_sq): grafting = 'adam' of the Kronecker methods."""
    (b1, b2) = betas
    m = st['exp_avg'] = st['exp_avg'].lerp_(V, 1 - b1) if 'exp_avg' in st else (1 - b1) * V
    v = st['exp_avg_sq'] = st['exp_avg_sq'].lerp_(V * V, 1 - b2) if 'exp_avg_sq' in st else (1 - b2) * V * V
    adam = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    return U * (adam.norm() / U.norm().clamp_min(1e-30))


def closure_loss(closure):
    """torch.optim's closure convention: the loss closure() returns, computed with grad enabled; None without one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
