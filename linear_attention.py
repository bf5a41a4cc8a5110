"""
Linear transformers as fast weight programmers (Schlag, Irie & Schmidhuber, 2021, "Linear Transformers Are
Secretly Fast Weight Programmers", https://arxiv.org/abs/2102.11174).

A head keeps a fast weight matrix S (D_v x D_k), written by keys and values and read by queries:

    sum rule (linear attention):  S_t = S_{t-1} + v_t kᵀ_t                         o_t = S_t q_t
    delta rule:                   S_t = S_{t-1} + β_t (v_t - S_{t-1} k_t) kᵀ_t       o_t = S_t q_t

with q, k already feature-mapped (DPFP or elu+1) and normalised. Each rule comes twice: a recurrent loop over
time (the definition, used as the reference and for generation) and a chunked form for training that has no
Python loop over tokens. The chunked delta rule is the WY/UT form of Yang et al., 2024 ("Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", https://arxiv.org/abs/2406.06484).

Layout is head-first throughout: q, k (B, H, T, D_k), v (B, H, T, D_v), beta (B, H, T), state (B, H, D_v, D_k).
Every form computes in at least float32 with autocast off (a bf16 fast-weight state would drift over a long
generation); o comes back in v's dtype, the state in at least float32.
"""

import torch
import torch.nn as nn
from torch.nn import functional as F

# -----------------------------------------------------------------------------
# feature maps, over the last dimension


def elu_plus_one(x):
    """φ(x) = elu(x) + 1 (Katharopoulos et al., 2020): positive, same dimension as x."""
    return F.elu(x) + 1


def dpfp(x, nu=1):
    """Deterministic parameter-free projection (Schlag et al., 2021, section 5.4), dimension 2·d·nu:
    r(x) = [ReLU(x), ReLU(-x)], φ(x) = concat over i = 1..nu of r ⊙ roll(r, i). Non-negative; x and -x (and, for
    d = 2 and nu = 1, any two inputs in different quadrants) get features with disjoint supports."""
    if not isinstance(nu, int) or nu < 1:
        raise ValueError(f"dpfp needs an integer nu >= 1, got {nu!r}")
    r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)  # (..., 2d)
    if nu >= r.size(-1):
        raise ValueError(f"dpfp needs nu < 2·d = {r.size(-1)}; roll by 2·d repeats roll by 0")
    return torch.cat([r * r.roll(i, dims=-1) for i in range(1, nu + 1)], dim=-1)  # (..., 2·d·nu)


def sum_norm(x, eps=1e-6):
    """φ / Σφ over the last dimension: keys with ‖k‖_1 = 1 and k >= 0 keep the delta rule's I - β k kᵀ a
    contraction. eps guards all-zero features (DPFP gives those, e.g. for x = (1, -1, 1))."""
    return x / (x.sum(dim=-1, keepdim=True) + eps)


# -----------------------------------------------------------------------------
# the fast-weight rules


def _check(q, k, v, beta=None, initial_state=None, chunk_size=None):
    if q.dim() != 4 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (B, H, T, D_k), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be (B, H, T, D_v) with q's (B, H, T) = {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if beta is not None and beta.shape != q.shape[:3]:
        raise ValueError(f"beta must be (B, H, T) = {tuple(q.shape[:3])}, got {tuple(beta.shape)}")
    B, H, T, D_k = q.shape
    if initial_state is not None and initial_state.shape != (B, H, v.size(-1), D_k):
        raise ValueError(f"initial_state must be (B, H, D_v, D_k) = {(B, H, v.size(-1), D_k)}, "
                         f"got {tuple(initial_state.shape)}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _zero_state(q, v, dtype):
    return torch.zeros(q.shape[:2] + (v.size(-1), q.size(-1)), dtype=dtype, device=q.device)  # (B, H, D_v, D_k)


def _chunks(x, C):
    """(B, H, T, ...) -> (B, H, N, C, ...), zero-padding T up to N·C. Zero keys and betas leave the state as is."""
    T = x.size(2)
    pad = -T % C
    if pad:
        x = torch.cat([x, x.new_zeros(x.shape[:2] + (pad,) + x.shape[3:])], dim=2)
    return x.view(x.shape[:2] + (x.size(2) // C, C) + x.shape[3:])


def linear_attention_recurrent(q, k, v, initial_state=None):
    """The sum rule as a loop over time, the reference: S_t = S_{t-1} + v_t kᵀ_t, o_t = S_t q_t.
    Returns (o (B, H, T, D_v), final state (B, H, D_v, D_k))."""
    _check(q, k, v, initial_state=initial_state)
    dtype = v.dtype
    ct = torch.promote_types(dtype, torch.float32)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = q.to(ct), k.to(ct), v.to(ct)
        S = _zero_state(q, v, ct) if initial_state is None else initial_state.to(ct)
        o = []
        for q_t, k_t, v_t in zip(q.unbind(2), k.unbind(2), v.unbind(2)):
            S = S + v_t[..., None] * k_t[:, :, None, :]  # (B, H, D_v, D_k)
            o.append(torch.einsum('bhvk,bhk->bhv', S, q_t))
    return torch.stack(o, dim=2).to(dtype), S


def linear_attention_chunked(q, k, v, chunk_size=64, initial_state=None):
    """The sum rule, chunk-parallel: inside a chunk, causal (q kᵀ) v as in attention; across chunks, the states
    at chunk starts are one cumulative sum. chunk_size >= T is the fully parallel (quadratic) form.
    Same arguments and returns as linear_attention_recurrent."""
    _check(q, k, v, initial_state=initial_state, chunk_size=chunk_size)
    dtype, T = v.dtype, q.size(2)
    ct = torch.promote_types(dtype, torch.float32)
    C = min(chunk_size, T)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = (_chunks(x.to(ct), C) for x in (q, k, v))  # (B, H, N, C, D)
        S0 = _zero_state(q, v, ct) if initial_state is None else initial_state.to(ct)
        dS = v.transpose(-1, -2) @ k  # (B, H, N, D_v, D_k): each chunk's Σ v kᵀ
        S_end = S0.unsqueeze(2) + dS.cumsum(dim=2)  # state after each chunk
        S_start = torch.cat([S0.unsqueeze(2), S_end[:, :, :-1]], dim=2)  # state before each chunk
        mask = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()  # i <= t
        A = (q @ k.transpose(-1, -2)).masked_fill(~mask, 0)  # (B, H, N, C, C)
        o = q @ S_start.transpose(-1, -2) + A @ v  # (B, H, N, C, D_v)
        o = o.flatten(2, 3)[:, :, :T]
    return o.to(dtype), S_end[:, :, -1]


def delta_rule_recurrent(q, k, v, beta, initial_state=None):
    """The delta rule as a loop over time, the reference: S_t = S_{t-1} + β_t (v_t - S_{t-1} k_t) kᵀ_t,
    o_t = S_t q_t, with S_0 = initial_state (zeros if None). q, k are used as given.
    Returns (o (B, H, T, D_v), final state (B, H, D_v, D_k))."""
    _check(q, k, v, beta, initial_state)
    dtype = v.dtype
    ct = torch.promote_types(dtype, torch.float32)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v, beta = q.to(ct), k.to(ct), v.to(ct), beta.to(ct)
        S = _zero_state(q, v, ct) if initial_state is None else initial_state.to(ct)
        o = []
        for q_t, k_t, v_t, beta_t in zip(q.unbind(2), k.unbind(2), v.unbind(2), beta.unbind(2)):
            v_old = torch.einsum('bhvk,bhk->bhv', S, k_t)  # what S now stores under k_t
            u_t = beta_t[..., None] * (v_t - v_old)  # (B, H, D_v)
            S = S + u_t[..., None] * k_t[:, :, None, :]  # (B, H, D_v, D_k)
            o.append(torch.einsum('bhvk,bhk->bhv', S, q_t))
    return torch.stack(o, dim=2).to(dtype), S


def delta_rule_chunked(q, k, v, beta, chunk_size=64, initial_state=None):
    """The delta rule, chunk-parallel (Yang et al., 2024). Write S_t = S_{t-1} + u_t kᵀ_t with
    u_t = β_t (v_t - S_{t-1} k_t). In a chunk that starts from state S, S_{t-1} = S + Σ_{i<t} u_i kᵀ_i, so
        u_t + β_t Σ_{i<t} (kᵀ_t k_i) u_i = β_t (v_t - S k_t),   i.e.   (I + L) U = diag(β) (V - K Sᵀ)
    with L = strictly lower part of diag(β) K Kᵀ. One batched triangular solve gives, for every chunk at once,
    W = (I + L)⁻¹ diag(β) K and U₀ = (I + L)⁻¹ diag(β) V (the WY/UT transform); then chunk by chunk
        U = U₀ - W Sᵀ,   O = Q Sᵀ + tril(Q Kᵀ) U,   S ← S + Uᵀ K.
    The loop runs over T / chunk_size chunks, not over tokens. Same arguments and returns as
    delta_rule_recurrent, plus chunk_size (a positive int; a chunk longer than T is cut to T)."""
    _check(q, k, v, beta, initial_state, chunk_size)
    dtype, T = v.dtype, q.size(2)
    ct = torch.promote_types(dtype, torch.float32)
    C = min(chunk_size, T)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = (_chunks(x.to(ct), C) for x in (q, k, v))  # (B, H, N, C, D)
        beta = _chunks(beta.to(ct), C)  # (B, H, N, C)
        S = _zero_state(q, v, ct) if initial_state is None else initial_state.to(ct)
        strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)  # i < t
        L = (beta[..., None] * (k @ k.transpose(-1, -2))).masked_fill(~strict, 0)  # (B, H, N, C, C)
        I = torch.eye(C, dtype=ct, device=q.device)
        rhs = beta[..., None] * torch.cat([k, v], dim=-1)  # diag(β) [K, V]
        WU = torch.linalg.solve_triangular(I + L, rhs, upper=False, unitriangular=True)
        W, U0 = WU.split([k.size(-1), v.size(-1)], dim=-1)  # (B, H, N, C, D_k), (B, H, N, C, D_v)
        A = (q @ k.transpose(-1, -2)).masked_fill(~(strict | I.bool()), 0)  # tril(Q Kᵀ), i <= t
        o = []
        # unbind, not x[:, :, n]: each indexing's backward would write a full-size zero gradient (O(T²) in all)
        for q_n, k_n, A_n, W_n, U0_n in zip(*(x.unbind(2) for x in (q, k, A, W, U0))):
            U = U0_n - W_n @ S.transpose(-1, -2)  # (B, H, C, D_v)
            o.append(q_n @ S.transpose(-1, -2) + A_n @ U)
            S = S + U.transpose(-1, -2) @ k_n
        o = torch.cat(o, dim=2)[:, :, :T]
    return o.to(dtype), S

# -----------------------------------------------------------------------------
# attention modules for model.py: nn.Linear projections (c_attn, c_beta, c_proj) so that the Kronecker
# optimizers precondition them like softmax attention's


class _FastWeightAttention(nn.Module):
    """Shared by 'linear' and 'delta': c_attn makes q, k, v per head; q, k go through the feature map.
    From GPTConfig: feature_map 'dpfp' | 'elu', dpfp_nu, chunk_size (train.py's config keys of the same names)."""

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.feature_map, self.dpfp_nu, self.chunk_size = config.feature_map, config.dpfp_nu, config.chunk_size
        if self.feature_map not in ('dpfp', 'elu'):
            raise ValueError(f"unknown feature_map {self.feature_map!r}; known: 'dpfp', 'elu'")
        if not isinstance(self.chunk_size, int) or self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int, got {self.chunk_size!r}")

    def qkv(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        if self.feature_map == 'dpfp':
            q, k = dpfp(q, self.dpfp_nu), dpfp(k, self.dpfp_nu)  # (B, nh, T, 2·hs·nu)
        else:
            q, k = elu_plus_one(q), elu_plus_one(k)
        return q, k, v

    def out(self, y):
        B, _, T, _ = y.size()
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_embd)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))

    def forward(self, x):
        """x (B, T, C) -> (B, T, C), chunked form from a zero state (training)."""
        y, _ = self.forward_step(x, None)
        return y

    def forward_step(self, x, state):
        """x (B, T, C) continuing from state (None: the zero state) -> (y (B, T, C), new state). One token runs
        the recurrent form, several the chunked form (a prompt); both are exact. Used by GPT.generate."""
        raise NotImplementedError


class LinearAttention(_FastWeightAttention):
    """Causal linear attention, the sum rule, with attention normalisation (Katharopoulos et al., 2020):
    o_t = S_t φ(q_t) / (z_tᵀ φ(q_t)), z_t = Σ_{i<=t} φ(k_i). z rides in the state as an extra value row
    (values get a constant 1 appended), so the state is (B, nh, hs + 1, D_k)."""

    eps = 1e-6

    def forward_step(self, x, state):
        q, k, v = self.qkv(x)
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, nh, T, hs + 1)
        if x.size(1) == 1:
            o, state = linear_attention_recurrent(q, k, v1, initial_state=state)
        else:
            o, state = linear_attention_chunked(q, k, v1, self.chunk_size, initial_state=state)
        y = o[..., :-1] / (o[..., -1:] + self.eps)  # (B, nh, T, hs)
        return self.out(y), state


class DeltaAttention(_FastWeightAttention):
    """Delta-rule fast weights (the paper's best): φ(q), φ(k) sum-normalised, β_t = sigmoid(c_beta(x_t)) per
    head. State (B, nh, hs, D_k)."""

    def __init__(self, config):
        super().__init__(config)
        self.c_beta = nn.Linear(config.n_embd, config.n_head, bias=config.bias)

    def forward_step(self, x, state):
        q, k, v = self.qkv(x)
        q, k = sum_norm(q), sum_norm(k)
        beta = torch.sigmoid(self.c_beta(x)).transpose(1, 2)  # (B, nh, T)
        if x.size(1) == 1:
            o, state = delta_rule_recurrent(q, k, v, beta, initial_state=state)
        else:
            o, state = delta_rule_chunked(q, k, v, beta, self.chunk_size, initial_state=state)
        return self.out(o), state
