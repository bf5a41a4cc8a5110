"""
EKFAC (George, Laurent, Bouthillier, Ballas & Vincent, 2018, "Fast Approximate Natural Gradient Descent in a
Kronecker-factored Eigenbasis", NeurIPS): Fixed Fisher's Kronecker eigenbasis, with KFAC's eigenvalues s_G s_A^T
replaced by the second moments of the per-token gradients in that basis (the diagonal of the Fisher there).
"""

import torch

from optim.eigenbasis import EigenbasisOptimizer


def eigenbasis_moments(a, g, Q_A, Q_G):
    """s_ij = (1/M) sum_m (Q_G^T g_m a_m^T Q_A)_ij^2, the per-token gradients' second moments in the eigenbasis,
    as ((g Q_G)^2)^T (a Q_A)^2 / M: no per-token matrix is formed. a (M, d_in [+1]), g (M, d_out)."""
    return (g @ Q_G).square().T @ (a @ Q_A).square() / a.shape[0]  # (d_out, d_in [+1])


class EKFAC(EigenbasisOptimizer):
    """EKFAC: per nn.Linear layer, with A = Q_A diag(s_A) Q_A^T, G = Q_G diag(s_G) Q_G^T the eigendecompositions of
    the factors (optim/capture.py, symbols of the paper) and a_m, g_m a factor-update step's per-token rows:

        s_new = (1/M) sum_m (Q_G^T g_m a_m^T Q_A)^2  = ((g Q_G)^2)^T (a Q_A)^2 / M          (d_out, d_in [+1])
        s     = s_new                           on a step that computes a new eigenbasis (every inv_update_freq)
        s    <- decay s + (1 - decay) s_new     on the factor-update steps in between
        U     = Q_G [ (Q_G^T V Q_A) / D ] Q_A^T,   D = s + lambda

    the exact damped inverse of F ~ (Q_A (x) Q_G) diag(vec s) (Q_A (x) Q_G)^T, whose diagonal in the Kronecker
    eigenbasis is now the Fisher's own (KFAC, and Fixed Fisher, use s_G s_A^T there). Then grafting, KL clipping,
    momentum and weight decay as in KroneckerOptimizer.

    Hyperparameters: the shared ones (optim/kronecker.py; damping_mode='relative' makes lambda damping * mean(s);
    factor_decay also averages s between eigenbases), eigen_refresh='none' | 'qr' and eigh_dtype (optim/eigenbasis.py).

    Caveats:
    - s restarts from one step's tokens whenever the eigenbasis is recomputed; it is averaged only when
      inv_update_freq is a multiple of factor_update_freq larger than it (train.py's default 10 and 10: no average).
      An eigh step that updates no factor starts s from s_G s_A^T (KFAC's eigenvalues) instead.
    - eigen_refresh='qr' turns the basis a little on every factor-update step; s keeps averaging across it.
    - Keeps the step's per-token rows a, g (M (d_in + d_out) numbers a layer) until the step ends (keep_rows).
    """

    keep_rows = True

    def update_decomposition(self, st):
        super().update_decomposition(st)  # a new eigenbasis: Q_A, s_A, Q_G, s_G
        if 'rows' in st:
            st['s'] = eigenbasis_moments(*st['rows'], st['Q_A'], st['Q_G'])
        else:
            st['s'] = torch.outer(st['s_G'], st['s_A'])

    def refresh_decomposition(self, st):
        super().refresh_decomposition(st)
        st['s'].lerp_(eigenbasis_moments(*st['rows'], st['Q_A'], st['Q_G']), 1 - self.factor_decay)

    def denominator(self, st):
        lam = st['damping_eff'] = self.damping_for(st['s'].mean(), 1.0)
        return st['s'] + lam
