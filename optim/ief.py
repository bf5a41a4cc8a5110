"""
iEF, the improved empirical Fisher (Wu, Yu, Zhang & Woodland, 2024, "An Improved Empirical Fisher Approximation for
Natural Gradient Descent", NeurIPS), solved exactly on the preconditioned layers; and iEKFAC, KFAC whose G takes
iEF's rescaling of each sample's gradient.
"""

import torch

from optim.kfac import KFAC
from optim.kronecker import KroneckerOptimizer
from optim.solves import robust


def gram(a, g, T):
    """(J J^T)_nm = <J_n, J_m> for the per-sample gradients J_n = sum_(t in n) g_t a_t^T of one layer, sample n being
    T consecutive tokens of a (M, d_a), g (M, d_g). Whichever exact form costs less: the token Grams
    (g g^T) * (a a^T) summed over each pair of samples' T x T blocks, M^2 (d_a + d_g), or the N per-sample
    gradients of this layer, (M + N^2) d_a d_g."""
    M, da, dg = a.shape[0], a.shape[1], g.shape[1]
    N = M // T
    if (M + N * N) * da * dg >= M * M * (da + dg):
        return ((g @ g.T) * (a @ a.T)).view(N, T, N, T).sum((1, 3))
    J = torch.einsum('ntg,nta->nga', g.view(N, T, dg), a.view(N, T, da)).reshape(N, dg * da)
    return J @ J.T


def squared_norms(x):
    """sum_m ||x_m||^2: iEF keeps no Kronecker factor, so factors() are mean squared norms of a and g_hat."""
    return x.square().sum()


class IEF(KroneckerOptimizer):
    """iEF: with J (N, P) the per-sample gradients of the summed loss on the preconditioned layers' parameters and
    s_n = ||grad_(z_n) l_n||^2 (for softmax cross-entropy sum_(t in n) ||p_t - e_(y_t)||^2), every step

        Delta = J^T (J J^T + lambda I)^-1 s,    W <- W - lr Delta        (Delta's block of a layer is U)

    so that, to first order and for small lambda, each sample's loss falls by lr s_n: by more where the model is
    further from the sample's label (the empirical Fisher's J^T (J J^T + lambda I)^-1 1 lowers every one by lr).
    J J^T = sum_layers gram(a, g) comes from the captured per-token rows, never from all layers' per-sample
    gradients at once, and is solved in float64; a layer's block is U = sum_n c_n J_n = g^T diag(c) a, with
    c = (J J^T + lambda I)^-1 s repeated over each sample's tokens. The gradient V is not used. Then grafting, KL
    clipping, momentum and weight decay as in KroneckerOptimizer.

    Hyperparameters: the shared ones (optim/kronecker.py; damping_mode='relative' takes lambda = damping
    tr(J J^T)/N), and samples='sequences' (the paper's choice: a sample is one of the B sequences of the logits
    (B, T, C), its loss summed over the T tokens) | 'tokens' (each token a sample, its gradient taken as g_t a_t^T,
    the expand setting), logits_module=None (the module that outputs the logits; None: lm_head if there is one,
    else the last nn.Linear). factor_update_freq is always 1 (iEF needs each step's per-sample gradients);
    factor_decay and inv_update_freq have nothing to act on; fisher must be 'empirical'.

    Caveats:
    - Keeps each step's per-token rows of every preconditioned layer (keep_rows); the token-Gram form costs
      M^2 memory per layer, the per-sample form N d_in d_out: M and N stay small (the paper: small batches).
    - 'tokens' in a transformer is an approximation: a token's gradient also flows through attention.
    - Other parameters (embeddings, norms, the tied head) are stepped by AdamW as usual, outside the iEF solve.
    - Under DDP every step all-gathers every layer's rows (M (d_in + d_out) numbers a layer, optim/distributed.py)
      to solve for the global batch; ranks must hold equal micro-batches.
    """

    statistic = staticmethod(squared_norms)
    keep_rows, logits_grad = True, True

    def __init__(self, model, samples='sequences', logits_module=None, **shared):  # shared: KroneckerOptimizer's
        if shared.get('fisher', 'empirical') != 'empirical':
            raise ValueError(f"iEF is built on the training labels' per-sample gradients: fisher must be 'empirical', "
                             f"got {shared['fisher']!r}")
        if shared.get('kfac_approx', 'expand') != 'expand':
            raise ValueError("iEF solves on the per-token rows: kfac_approx must be 'expand'")
        if samples not in ('sequences', 'tokens'):
            raise ValueError(f"unknown samples {samples!r}; known: sequences, tokens")
        if shared.get('factor_update_freq', 1) != 1:
            print(f"IEF: factor_update_freq={shared['factor_update_freq']} ignored: iEF needs every step's per-sample "
                  "gradients")
        self.samples, self.logits_module, self._solved_at = samples, logits_module, -1
        super().__init__(model, **dict(shared, factor_update_freq=1))

    def solve(self):
        """Each layer's U for this step, from the rows of all of them: one N x N solve (under DDP the rows of every
        rank, which FactorCapture gathers: every rank solves for the global batch)."""
        s, T = self.capture.logits.take()
        T = 1 if self.samples == 'tokens' else T
        for st in self.layer_state.values():
            st.pop('U', None)  # a layer that had rows but no gradient last step
        layers = [st for st in self.layer_state.values() if 'rows' in st]
        if any(st['rows'][0].shape[0] != s.shape[0] for st in layers) or s.shape[0] % T:
            raise RuntimeError(f"iEF: {s.shape[0]} tokens of logits in samples of {T}, but the layers saw "
                               f"{sorted({st['rows'][0].shape[0] for st in layers})}")
        s = s.view(-1, T).sum(1).double()  # (N,) ||grad_(z_n) l_n||^2 of each sample
        K = sum(gram(*st['rows'], T).double() for st in layers)  # (N, N) J J^T
        lam = self.damping_for(K.diagonal().mean(), 1.0)
        eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        c = robust(self, lambda K, lam: torch.cholesky_solve(s[:, None], torch.linalg.cholesky(K + lam * eye)),
                   K, float(lam), 'Cholesky of J J^T')[:, 0]
        for st in layers:
            a, g = st['rows']
            st['U'] = (g * c.repeat_interleave(T).to(g.dtype)[:, None]).T @ a  # (d_out, d_in [+1])
            st['damping_eff'] = torch.as_tensor(lam, dtype=a.dtype)
        self._solved_at = self.steps

    def precondition(self, st, V):
        if self._solved_at != self.steps:
            self.solve()
        return st.pop('U')


class IEKFAC(KFAC):
    """iEKFAC: KFAC (optim/kfac.py) on G_iEF = (1/M) sum_m g_m g_m^T / ||grad_(z_m) l_m||^2, each token's output
    gradient rescaled by its logits' gradient norm (p_m - e_(y_m) for softmax cross-entropy): iEF's remedy for the
    empirical Fisher's inverse scaling carried into a Kronecker factor (Wu et al., 2024, expect approximate natural
    gradient methods to gain from iEF; this is one way, not the paper's):

        U = (G_iEF + (sqrt(lambda)/pi) I)^-1 V (A + pi sqrt(lambda) I)^-1

    Hyperparameters: those of KFAC (optim/kfac.py), and logits_module=None (as in IEF).

    Caveats:
    - Samples are tokens here (KFAC's samples); a token with logits gradient ~0 has g ~ 0 too and adds ~nothing.
    - G_iEF is on another scale than KFAC's G (each g_m divided by ||p_m - e_(y_m)|| <= sqrt(2), up to 10^3 times
      on well-fit tokens): the same lr and damping act differently than in KFAC.
    - Keeps the step's per-token rows a, g (M (d_in + d_out) numbers a layer) until the step ends (keep_rows).
    - fisher='sampled' rescales by the sampled labels' logits gradient, as it takes G from their backward.
    """

    keep_rows, logits_grad = True, True

    def __init__(self, model, logits_module=None, **kwargs):  # kwargs: KFAC's
        if kwargs.get('kfac_approx', 'expand') != 'expand':
            raise ValueError("iEKFAC rescales each token's g_hat by its logits: kfac_approx must be 'expand'")
        self.logits_module = logits_module
        super().__init__(model, **kwargs)

    def new_factors(self, st, A, G):
        """G from the step's g_m / ||grad_(z_m) l_m||."""
        a, g = st['rows']
        s, _ = self.capture.logits.take()
        if s.shape[0] != g.shape[0]:
            raise RuntimeError(f"iEKFAC: {s.shape[0]} tokens of logits, but the layer saw {g.shape[0]}")
        g = g * s.clamp_min(1e-30).rsqrt().to(g.dtype)[:, None]
        return A, g.T @ g / g.shape[0]
