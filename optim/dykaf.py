"""
DyKAF (Yudin, Grishina, Veprikov, Beznosikov & Rakhuba, 2025, "DyKAF: Dynamical Kronecker Approximation of the
Fisher Information Matrix for Gradient Preconditioning", arXiv:2511.06477): SOAP's skeleton (Vyas et al., 2024:
Adam in the eigenbasis of two Kronecker factors, the bases refreshed by one power iteration + QR) with the factors
kept as the Kronecker product nearest to the running empirical Fisher of the gradient, by a projector-splitting step.
"""

import torch

from optim.solves import eigh_psd, qr_refresh
from optim.kronecker import KroneckerOptimizer


def ksl_step(L, R, V, decay):
    """One rank-1 projector-splitting (KSL, Lubich & Oseledets 2014) step of the Kronecker pair R (x) L, L = L^ with
    ||L^||_F = 1 (d_out, d_out), R = s R^ (d_in, d_in), towards the running Fisher
    Y = decay (R (x) L) + (1 - decay) vec(V) vec(V)^T. In the rearranged space, where R (x) L is the rank-1 matrix
    s vec(L^) vec(R^)^T and vec(V) vec(V)^T acts as X: R^ -> V R^ V^T, X^T: L^ -> V^T L^ V, the K, S and L steps
    with the increment Y - R (x) L reduce to:

        K   = decay s L^ + (1 - decay) V R^ V^T,                  L^' = K / ||K||_F
        R'  = decay s <L^, L^'> R^ + (1 - decay) V^T L^' V,       s' = ||R'||_F

    one alternating power step on Y from the current pair. Returns (L^', R')."""
    s = R.norm()
    Rh = R / s.clamp_min(1e-30)
    K = decay * s * L + (1 - decay) * V @ Rh @ V.T
    L1 = K / K.norm().clamp_min(1e-30)
    return L1, decay * s * (L * L1).sum() * Rh + (1 - decay) * V.T @ L1 @ V


class DyKAF(KroneckerOptimizer):
    """DyKAF: per nn.Linear layer with gradient V (d_out, d_in [+1], bias as the last column), factors L (d_out side,
    st['G'], unit norm) and R (d_in side, st['A']) with F_emp ~ R (x) L, i.e. (A, G) = (R, L) as in
    optim/capture.py, and their eigenbases Q_L, Q_R:

        first step:  (L, R) = ksl_step(V V^T/||V V^T||, V^T V/||V^T V||, V, 0): the pair nearest vec(V) vec(V)^T
                     after one power step from Shampoo's factors; Q from eigh; no update (SOAP: a gradient never
                     shapes its own projection)
        V' = Q_L^T V Q_R,   m <- beta1 m + (1 - beta1) V,   v <- beta2 v + (1 - beta2) V'^2   (bias-corrected: ^)
        U  = Q_L [ (Q_L^T m^ Q_R) / (sqrt(v^) + eps) ] Q_R^T
        L, R <- ksl_step(L, R, V, factor_decay)                     every factor_update_freq steps, after U
        Q_L, Q_R <- one power iteration + QR from Q (v permuted alike)   every inv_update_freq steps

    Then grafting, KL clipping and weight decay as in KroneckerOptimizer; no heavy-ball momentum on top (m is the
    momentum, beta1), so DyKAF takes no momentum argument. Factors come from the gradient, not from hooks:
    backward() is a plain backward.

    Hyperparameters (defaults): lr=3e-3, weight_decay=0.1, factor_decay=0.95 (SOAP's shampoo_beta),
    factor_update_freq=1, inv_update_freq=10 (SOAP's precondition_frequency), kl_clip=None, exclude='',
    max_factor_dim=8192, grafting='none' | 'adam', beta1=0.9, beta2=0.95, eps=1e-8, adamw_lr_scale=1.0,
    second_moment='full' (v elementwise, as SOAP) | 'factored' (Adafactor's rank-1 v = r c^T / mean(r), from the
    row and column means of V'^2).

    Caveats:
    - train.py's factor_update_freq (10 by default) reaches DyKAF too: SOAP and the paper update the factors on
      every step (--factor_update_freq=1).
    - The projector-splitting step tracks the best Kronecker product of the running Fisher only approximately: it
      takes the current pair for the past (the exact running Fisher is never stored).
    - v is kept across basis refreshes (permuted with the basis order, not rotated), as in SOAP.
    - Layers that get tied weights, or are excluded or too wide, go to AdamW, as in every Kronecker method.
    """

    def __init__(self, model, lr=3e-3, weight_decay=0.1, factor_decay=0.95, factor_update_freq=1, inv_update_freq=10,
                 kl_clip=None, exclude='', max_factor_dim=8192, grafting='none', beta1=0.9, beta2=0.95, eps=1e-8,
                 adamw_lr_scale=1.0, second_moment='full'):
        if second_moment not in ('full', 'factored'):
            raise ValueError(f"unknown second_moment {second_moment!r}; known: full, factored")
        self.second_moment = second_moment
        super().__init__(model, lr=lr, weight_decay=weight_decay, momentum=0.0, factor_decay=factor_decay,
                         factor_update_freq=factor_update_freq, inv_update_freq=inv_update_freq, kl_clip=kl_clip,
                         exclude=exclude, max_factor_dim=max_factor_dim, grafting=grafting, beta1=beta1,
                         beta2=beta2, eps=eps, adamw_lr_scale=adamw_lr_scale)
        self.capture.disarm()
        self.capture.modules = {}  # nothing to hook: arm() adds no hook, every step is a plain one

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            st = self.layer_state.get(group.get('name'))
            W = group['params'][0]
            if group['kind'] != 'kronecker' or 'A' in st or W.grad is None:
                continue
            V = torch.cat([W.grad, group['params'][1].grad[:, None]], 1) if len(group['params']) == 2 else W.grad
            V = V.float() if V.dtype != torch.float64 else V
            if torch.isfinite(V).all():  # else the step is skipped and the next one starts the factors
                L, R = V @ V.T, V.T @ V
                st['G'], st['A'] = ksl_step(L / L.norm().clamp_min(1e-30), R / R.norm().clamp_min(1e-30), V, 0.0)
                st['fresh'] = True
        return super().step(closure)

    def update_decomposition(self, st):
        if 'Q_A' not in st:
            for f in 'AG':
                st['s_' + f], st['Q_' + f] = self.robust(eigh_psd, st[f], 0.0, f'eigh of {dict(A="R", G="L")[f]}')
            return
        for f, dim in (('A', 1), ('G', 0)):  # SOAP: sort by Rayleigh quotient, one power step, QR; v follows the order
            order = torch.argsort((st['Q_' + f] * (st[f] @ st['Q_' + f])).sum(0), descending=True)
            st['s_' + f], st['Q_' + f] = qr_refresh(st[f], st['Q_' + f])
            key = 'v' if self.second_moment == 'full' else ('v_rows', 'v_cols')[dim]
            if key in st:
                st[key] = st[key].index_select(dim if key == 'v' else 0, order)

    def precondition(self, st, V):
        if st.pop('fresh', False):
            return torch.zeros_like(V)
        b1, b2 = self.betas
        QL, QR = st['Q_G'], st['Q_A']
        Vp = QL.T @ V @ QR
        st['t'] = t = st.get('t', 0) + 1
        st['m'] = m = st['m'].lerp_(V, 1 - b1) if 'm' in st else (1 - b1) * V
        sq = Vp.square()
        if self.second_moment == 'full':
            st['v'] = v = st['v'].lerp_(sq, 1 - b2) if 'v' in st else (1 - b2) * sq
        else:  # Adafactor: row and column means of V'^2, v = r c^T / mean(r)
            for key, new in (('v_rows', sq.mean(1)), ('v_cols', sq.mean(0))):
                st[key] = st[key].lerp_(new, 1 - b2) if key in st else (1 - b2) * new
            v = torch.outer(st['v_rows'], st['v_cols']) / st['v_rows'].mean().clamp_min(1e-30)
        U = QL @ ((QL.T @ m @ QR / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + self.eps)) @ QR.T
        if self.steps % self.factor_update_freq == 0:
            st['G'], st['A'] = ksl_step(st['G'], st['A'], V, self.factor_decay)
        return U
