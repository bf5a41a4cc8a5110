"""
DyKAF (Yudin, Grishina, Veprikov, Beznosikov & Rakhuba, 2025, "DyKAF: Dynamical Kronecker Approximation of the
Fisher Information Matrix for Gradient Preconditioning", arXiv:2511.06477): SOAP's skeleton (Vyas et al., 2024:
Adam in the eigenbasis of two Kronecker factors, the bases refreshed by one power iteration + QR) with the factors
kept as the Kronecker product nearest to the running empirical Fisher of the gradient, by a projector-splitting step.
"""

import torch

from kernels import eigenbasis_precondition
from optim.kronecker import KroneckerOptimizer
from optim.solves import eigh_psd, qr_refresh, robust


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
    st['L'], unit norm) and R (d_in side, st['R']) with F_emp ~ R (x) L (in optim/capture.py's order, A (x) G), and
    their eigenbases Q_L, Q_R:

        first step:  (L, R) = ksl_step(V V^T/||V V^T||, V^T V/||V^T V||, V, 0): the pair nearest vec(V) vec(V)^T
                     after one power step from Shampoo's factors; Q from eigh; no update (SOAP: a gradient never
                     shapes its own projection)
        V' = Q_L^T V Q_R,   m <- beta1 m + (1 - beta1) V,   v <- beta2 v + (1 - beta2) V'^2   (bias-corrected: ^)
        U  = Q_L [ (Q_L^T m^ Q_R) / D ] Q_R^T,   D = sqrt(v^) + eps      (the eigenbasis solve of optim/eigenbasis.py)
        L, R <- ksl_step(L, R, V, factor_decay)                     every factor_update_freq steps, after U
        Q_L, Q_R <- one power iteration + QR from Q (v permuted alike)   every inv_update_freq steps

    Then grafting, KL clipping and weight decay as in KroneckerOptimizer; no heavy-ball momentum on top (m is the
    momentum, beta1). Factors come from the gradient, not from hooks (hooked = False): backward() is a plain
    backward.

    Hyperparameters: the shared ones (optim/kronecker.py; factor_decay is SOAP's shampoo_beta, inv_update_freq its
    precondition_frequency) except those in `unused`, which it does not take, and second_moment='full' (v
    elementwise, as SOAP) | 'factored' (Adafactor's rank-1 v = r c^T / mean(r), from the row and column means of
    V'^2).

    Caveats:
    - SOAP and the paper update the factors on every step: factor_update_freq=1 (config/dykaf_small.py).
    - The projector-splitting step tracks the best Kronecker product of the running Fisher only approximately: it
      takes the current pair for the past (the exact running Fisher is never stored).
    - v is kept across basis refreshes (permuted with the basis order, not rotated), as in SOAP.
    - Layers that get tied weights, or are excluded or too wide, go to AdamW, as in every Kronecker method.
    """

    hooked = False
    factor_names = ('R', 'L')
    unused = ('momentum', 'damping', 'damping_mode', 'fisher', 'damping_schedule', 'damping_update_freq',
              'kfac_approx', 'step_rule', 'step_rule_freq')

    def __init__(self, model, second_moment='full', **shared):  # shared: KroneckerOptimizer's, less `unused`
        if second_moment not in ('full', 'factored'):
            raise ValueError(f"unknown second_moment {second_moment!r}; known: full, factored")
        given = [k for k in self.unused if k in shared]
        if given:
            raise TypeError(f"DyKAF takes no {', '.join(given)} (m is its momentum; it has no damping)")
        self.second_moment = second_moment
        super().__init__(model, momentum=0.0, **shared)

    def start_factors(self, st, V):
        L, R = V @ V.T, V.T @ V
        st['L'], st['R'] = ksl_step(L / L.norm().clamp_min(1e-30), R / R.norm().clamp_min(1e-30), V, 0.0)
        st['fresh'] = True

    def update_decomposition(self, st):
        if 'Q_R' not in st:
            for f in 'RL':
                st['s_' + f], st['Q_' + f] = robust(self, eigh_psd, st[f], 0.0, f'eigh of {f}')
            return
        for f, dim in (('R', 1), ('L', 0)):  # SOAP: sort by Rayleigh quotient, one power step, QR; v follows the order
            order = torch.argsort((st['Q_' + f] * (st[f] @ st['Q_' + f])).sum(0), descending=True)
            st['s_' + f], st['Q_' + f] = qr_refresh(st[f], st['Q_' + f])
            key = 'v' if self.second_moment == 'full' else ('v_rows', 'v_cols')[dim]
            if key in st:
                st[key] = st[key].index_select(dim if key == 'v' else 0, order)

    def precondition(self, st, V):
        if st.pop('fresh', False):
            return torch.zeros_like(V)
        b1, b2 = self.betas
        QL, QR = st['Q_L'], st['Q_R']
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
        U = eigenbasis_precondition(m / (1 - b1 ** t), QL, QR, (v / (1 - b2 ** t)).sqrt() + self.eps)
        if self.steps % self.factor_update_freq == 0:
            st['L'], st['R'] = ksl_step(st['L'], st['R'], V, self.factor_decay)
        return U
