"""
Muon (Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/) on the transformer blocks' 2-D weights,
AdamW on the rest, split as modded-nanogpt splits it. The Muon part is torch.optim.Muon itself, not a copy:

    B <- mu B + (1 - mu) G,   O = NewtonSchulz5((1 - mu) G + mu B)   (Nesterov; O ~ U V^T where U S V^T is the
    SVD of its argument),   W <- (1 - lr wd) W - lr_adj O,   lr_adj = 0.2 sqrt(max(d_out, d_in)) lr

lr_adj is torch's adjust_lr_fn='match_rms_adamw' (Liu et al., 2025, "Muon is Scalable for LLM Training"): it scales
O to the RMS of a typical AdamW update, so that Muon reuses AdamW's learning rate and weight decay: one
`learning_rate` drives both parts, and `study.py --tune lr=...` tunes them together. modded-nanogpt's scaling is
adjust_lr_fn='original' (sqrt(max(1, d_out/d_in)) lr) with a Muon lr 0.02 beside the head's 0.0036:
MuonAdamW(model, lr=0.0036, adjust_lr_fn='original', muon_lr_scale=5.6) is that.
"""

from contextlib import contextmanager

import torch
import torch.optim._muon as torch_muon

from optim.adamw import block_matrices_and_rest, closure_loss


@contextmanager
def newton_schulz_in(dtype):
    """torch.optim.Muon's Newton-Schulz in dtype rather than its bfloat16, for the steps taken inside."""
    if dtype == torch.bfloat16:
        yield
        return
    from pytorch_optimizer.optimizer.utils import zero_power_via_newton_schulz_5
    torch_ns = torch_muon._zeropower_via_newtonschulz

    def newton_schulz(grad, ns_coefficients, ns_steps, eps):  # torch's signature; X <- a X + (b XX^T + c (XX^T)^2) X
        return zero_power_via_newton_schulz_5(grad, num_steps=ns_steps, eps=eps, weights=tuple(ns_coefficients),
                                              dtype=dtype)
    torch_muon._zeropower_via_newtonschulz = newton_schulz
    try:
        yield
    finally:
        torch_muon._zeropower_via_newtonschulz = torch_ns


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer over two: torch.optim.Muon for the 2-D weights of model.transformer.h (the blocks), AdamW
    (optim/adamw.py: decay on 2-D tensors only) for the embeddings, the tied lm_head, norms and biases.

    Its param_groups are the two optimizers' groups (the same dicts), Muon's first; each carries an lr_scale that
    train.py multiplies into its scheduled learning rate: muon_lr_scale for Muon's, 1.0 for AdamW's.

    Hyperparameters (defaults): lr=6e-4, weight_decay=0.1 (both parts, decoupled), beta1=0.9, beta2=0.95, eps=1e-8
    (AdamW part), momentum=0.95 (Muon's, Nesterov), muon_lr_scale=1.0, adjust_lr_fn='match_rms_adamw' | 'original',
    ns_steps=5 (Newton-Schulz iterations), ns_dtype='auto' (bfloat16 on GPUs, float32 on CPUs) | 'bfloat16' |
    'float32'.

    Some warnings:
    - Newton-Schulz runs in bfloat16 (torch's choice) on GPUs. On a CPU bfloat16 matmuls are emulated (~100 ms per
      512 x 128 matrix, ~1.2 s per step for config/adamw_small.py's 16 matrices, AdamW's step ~10 ms), so there
      ns_dtype='auto' runs the same quintic iteration in float32 (pytorch-optimizer's
      zero_power_via_newton_schulz_5, swapped in for torch's during Muon's step): ~1 ms per matrix.
    - Muon knows nothing of DDP sharding: every rank orthogonalises every matrix (fine at this scale).
    - train.py's config global momentum is 0.9 (the Kronecker methods'): set momentum = 0.95 for Muon's default.
    """

    def __init__(self, model, lr=6e-4, weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8, momentum=0.95,
                 muon_lr_scale=1.0, adjust_lr_fn='match_rms_adamw', ns_steps=5, ns_dtype='auto'):
        if ns_dtype not in ('auto', 'bfloat16', 'float32'):
            raise ValueError(f"unknown ns_dtype {ns_dtype!r}; known: auto, bfloat16, float32")
        hidden, rest = block_matrices_and_rest(model, weight_decay, 'Muon')
        if ns_dtype == 'auto':
            ns_dtype = 'bfloat16' if hidden[0].is_cuda else 'float32'
        self.ns_dtype = getattr(torch, ns_dtype)
        self.muon = torch.optim.Muon([{'params': hidden, 'lr_scale': muon_lr_scale}], lr=lr * muon_lr_scale,
                                     weight_decay=weight_decay, momentum=momentum, nesterov=True,
                                     ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        self.adamw = torch.optim.AdamW(rest, lr=lr, betas=(beta1, beta2), eps=eps,
                                       fused=all(p.is_cuda for p in model.parameters()))
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        with newton_schulz_in(self.ns_dtype):
            self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self):
        return {'muon': self.muon.state_dict(), 'adamw': self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        if set(state_dict) != {'muon', 'adamw'}:
            raise ValueError(f"not a MuonAdamW state_dict (keys {sorted(state_dict)}, expected 'muon' and 'adamw')")
        self.muon.load_state_dict(state_dict['muon'])
        self.adamw.load_state_dict(state_dict['adamw'])
        self.param_groups = self.muon.param_groups + self.adamw.param_groups  # loading made new group dicts


def muon(model, lr=6e-4, weight_decay=0.1, beta1=0.9, beta2=0.95, momentum=0.95, muon_lr_scale=1.0,
         ns_dtype='auto'):
    """The registry's builder: MuonAdamW with the arguments train.py's config globals can set."""
    return MuonAdamW(model, lr=lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2, momentum=momentum,
                     muon_lr_scale=muon_lr_scale, ns_dtype=ns_dtype)
