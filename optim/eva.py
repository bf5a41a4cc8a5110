"""
EVA (Zhang, Shi, Wu, Wang, Chu & Li, 2023, "Eva: Practical Second-order Optimization with Kronecker-vectorized
Approximation", ICLR): a rank-one Kronecker Fisher from mean vectors, inverted in closed form.
"""

import torch

from optim.kronecker import KroneckerOptimizer


def vector_sum(x):
    """Sum over tokens of x (M, d): what EVA's Kronecker vectors sum."""
    return x.sum(0)  # (d,)


class EVA(KroneckerOptimizer):
    """EVA: per nn.Linear layer, the Kronecker vectors (running averages, see optim/capture.py)

        a_bar = (1/M) sum_m a_m,   g_bar = (1/M) sum_m g_hat_m

    give the Fisher (a_bar a_bar^T) (x) (g_bar g_bar^T) + lambda I = lambda I + u u^T, u = a_bar (x) g_bar, which
    Sherman-Morrison inverts in closed form:

        U = (1/lambda) [V - (g_bar^T V a_bar) / (lambda + |a_bar|^2 |g_bar|^2) * g_bar a_bar^T]

    No decomposition and no inverse: inv_update_freq has nothing to refresh, and U always uses the current vectors.
    Then grafting, KL clipping, momentum and weight decay as in KroneckerOptimizer. factors() returns
    {name: (a_bar, g_bar)}.

    Hyperparameters: the shared ones (optim/kronecker.py; damping_mode='relative' makes lambda damping *
    (|a_bar|^2 / dim a)(|g_bar|^2 / dim g), the mean eigenvalue of the rank-one Fisher; inv_update_freq is unused).

    Caveats:
    - With the empirical Fisher, g_bar is the mean per-token gradient, so u u^T holds the gradient itself and U is
      close to V / lambda minus its component along g_bar a_bar^T: the step size is set by lambda and lr together
      (the paper relies on KL clipping for that).
    - The running average of a_bar and g_bar is not the average of the rank-one Fisher: EVA's approximation.
    """

    statistic = staticmethod(vector_sum)

    def precondition(self, st, V):
        a, g = st['A'], st['G']  # a_bar (d_in [+1],), g_bar (d_out,)
        aa, gg = a @ a, g @ g
        lam = self.damping_for(aa / a.numel(), gg / g.numel())
        st['damping_eff'] = lam
        coef = (g @ V @ a) / (lam + aa * gg)
        return (V - coef * torch.outer(g, a)) / lam
