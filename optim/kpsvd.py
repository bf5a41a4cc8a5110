"""
KPSVD (Koroko, Anciaux-Sedrakian, Ben Gharbia, Garès, Haddou & Tran, 2023, "Efficient approximations of the Fisher
matrix in neural networks using Kronecker product singular value decomposition", ESAIM: Proceedings and Surveys):
the Kronecker product nearest in Frobenius norm to each layer's Fisher block, instead of KFAC's E[a a^T] (x) E[g g^T];
and their rank-2 'KFAC-corrected' variant, KFAC plus the nearest Kronecker product to what KFAC leaves out.
"""

import torch

from kernels import eigenbasis_precondition
from optim.fixed_fisher import FixedFisher
from optim.kronecker import KroneckerOptimizer
from optim.solves import robust, split_damping

KEEP = 0.1  # kfac_corrected keeps 1 + d_G d_A >= KEEP: the correction removes at most 90% of a direction's curvature


def nearest_kronecker(a, g, V0, tol, max_iters, minus=None):
    """Top singular triple of R(F), F = (1/M) sum_m (a_m a_m^T) (x) (g_m g_m^T) [- A_m (x) G_m if minus = (A_m, G_m)],
    R the rearrangement with R(A (x) G) = vec(A) vec(G)^T, so ||F - A (x) G||_F = ||R(F) - vec(A) vec(G)^T||_F.
    Alternating power iteration from V0 (G-shaped), matrix-free on the tokens a (M, d_a), g (M, d_g):
        Z V   = (1/M) sum_m (g_m^T V g_m) a_m a_m^T   [- <G_m, V> A_m]
        Z^T U = (1/M) sum_m (a_m^T U a_m) g_m g_m^T   [- <A_m, U> G_m]
    until ||V_k - V_(k-1)||_F <= tol or max_iters. Returns (sigma, U, V, iterations), ||U||_F = ||V||_F = 1:
    sigma U (x) V is the nearest Kronecker product. From a positive semi-definite V0 without minus, U and V stay so."""
    M = a.shape[0]

    def Z(V):
        out = a.T @ (((g @ V) * g).sum(1, keepdim=True) * a) / M  # (d_a, d_a)
        return out if minus is None else out - (minus[1] * V).sum() * minus[0]

    def Zt(U):
        out = g.T @ (((a @ U) * a).sum(1, keepdim=True) * g) / M  # (d_g, d_g)
        return out if minus is None else out - (minus[0] * U).sum() * minus[1]

    V = V0 / V0.norm().clamp_min(1e-30)
    for k in range(1, max_iters + 1):
        U = Z(V)
        U = U / U.norm().clamp_min(1e-30)
        W = Zt(U)
        sigma = W.norm()
        W = W / sigma.clamp_min(1e-30)
        moved = (W - V).norm()
        V = W
        if moved <= tol:
            break
    return sigma, U, V, k


def check_power(power_tol, power_iters):
    if not (power_tol > 0 and isinstance(power_iters, int) and power_iters >= 1):
        raise ValueError(f"need power_tol > 0 and an int power_iters >= 1, got {power_tol!r}, {power_iters!r}")


def mean_power_iters(opt):
    """Diagnostics: kpsvd_iters, the mean power iterations of the last factor-update step over the layers."""
    iters = [st['kpsvd_iters'] for st in opt.layer_state.values() if 'kpsvd_iters' in st]
    return dict(kpsvd_iters=float(sum(iters) / len(iters)) if iters else 0.0)


def generalized_eigh(B, C):
    """(d, P) with P^T B P = I and P^T C P = diag(d), for B symmetric positive definite and C symmetric."""
    L = torch.linalg.cholesky(B)
    Linv = torch.linalg.solve_triangular(L, torch.eye(B.shape[0], dtype=B.dtype, device=B.device), upper=False)
    d, W = torch.linalg.eigh(Linv @ C @ Linv.T)
    return d, Linv.T @ W


class KPSVD(FixedFisher):
    """KPSVD: per nn.Linear layer, with a_m, g_m a factor-update step's per-token rows (optim/capture.py, symbols of
    the paper), the pair (A, G) that minimises ||F - A (x) G||_F for the step's Fisher block
    F = (1/M) sum_m (a_m a_m^T) (x) (g_m g_m^T): the top singular pair of the rearranged F, found by warm-started
    power iteration on matrix-free products (nearest_kronecker; never forms F). (A, G) is averaged across
    factor-update steps like KFAC's factors and inverted exactly as in Fixed Fisher:

        U = Q_G [ (Q_G^T V Q_A) / (s_G s_A^T + lambda) ] Q_A^T = (A (x) G + lambda I)^-1 vec(V)

    factors() returns the pair as (A, G), scaled so that tr A = tr E[a a^T]. Then grafting, KL clipping, momentum
    and weight decay as in KroneckerOptimizer. Diagnostics add kpsvd_iters, the mean power iterations of the last
    factor-update step.

    Hyperparameters: those of FixedFisher (optim/fixed_fisher.py: cross_terms and solve act on the nearest pair
    as on KFAC's factors), and power_tol=1e-4 (stop when the unit-norm G moves less than this), power_iters=100
    (at most; the first step starts cold from KFAC's G).

    Caveats:
    - Each power iteration costs about two KFAC factor computations; a warm start usually needs a few.
    - The average of nearest pairs is not the nearest pair to the averaged Fisher (as KFAC averages A and G apart).
    - Keeps the step's per-token rows a, g (M (d_in + d_out) numbers a layer) until the step ends (keep_rows).
    """

    keep_rows = True

    def __init__(self, model, power_tol=1e-4, power_iters=100, **kwargs):  # kwargs: FixedFisher's
        check_power(power_tol, power_iters)
        self.power_tol, self.power_iters = power_tol, power_iters
        super().__init__(model, **kwargs)

    def new_factors(self, st, A, G):
        """The step's nearest Kronecker pair, warm-started from the running one (KFAC's G at first), split so that
        tr A_new = tr A (A keeps the scale of KFAC's E[a a^T])."""
        sigma, U, V, st['kpsvd_iters'] = nearest_kronecker(*st['rows'], st.get('G', G), self.power_tol,
                                                           self.power_iters)
        c = A.trace() / U.trace().clamp_min(1e-30)
        return c * U, (sigma / c) * V

    def diagnostics(self):
        return dict(super().diagnostics(), **mean_power_iters(self))


class KFACCorrected(KroneckerOptimizer):
    """KFAC-corrected (Koroko et al., 2023): per nn.Linear layer, KFAC's factors A, G (optim/capture.py) plus the
    Kronecker product A_2 (x) G_2 nearest to the rest of the step's Fisher block, F - A (x) G (nearest_kronecker
    with minus, warm-started; both averaged across factor-update steps), damped on the KFAC term as in optim/kfac.py:

        F ~ (A + pi sqrt(lambda) I) (x) (G + sqrt(lambda)/pi I) + A_2 (x) G_2,  pi = sqrt((tr A/dim A)/(tr G/dim G))

    inverted exactly by simultaneous diagonalisation: P_A^T (A + pi sqrt(lambda) I) P_A = I, P_A^T A_2 P_A = diag(d_A)
    (generalized_eigh), the same for G, so that

        U = P_G [ (P_G^T V P_A) / (1 + d_G d_A^T) ] P_A^T

    the eigenbasis solve (kernels.eigenbasis_precondition) with non-orthogonal bases and D = max(1 + d_G d_A^T, KEEP).
    factors() returns KFAC's (A, G); the correction is st['A2'], st['G2'] (sqrt(sigma) times unit-norm matrices).
    Decompositions every inv_update_freq steps, the correction also on the factor-update steps in between.
    Hyperparameters: the shared ones (optim/kronecker.py), power_tol=1e-4 and power_iters=100 (as KPSVD's).

    Caveats:
    - The rank-2 sum need not be positive definite: 1 + d_G d_A is clamped at KEEP = 0.1.
    - The correction is indefinite, so the damping acts on the KFAC term (with its cross terms), not as lambda I.
    """

    keep_rows = True

    def __init__(self, model, power_tol=1e-4, power_iters=100, **shared):  # shared: KroneckerOptimizer's
        check_power(power_tol, power_iters)
        self.power_tol, self.power_iters = power_tol, power_iters
        super().__init__(model, **shared)

    def correct(self, st):
        a, g = st['rows']
        A, G = a.T @ a / a.shape[0], g.T @ g / g.shape[0]  # this step's KFAC factors
        sigma, U, V, st['kpsvd_iters'] = nearest_kronecker(a, g, st.get('G2', G), self.power_tol, self.power_iters,
                                                           minus=(A, G))
        for key, new in (('A2', sigma.sqrt() * U), ('G2', sigma.sqrt() * V)):
            st[key] = new if key not in st else st[key].lerp_(new, 1 - self.factor_decay)

    def update_decomposition(self, st):
        if 'rows' in st:
            self.correct(st)
        A, G = st['A'], st['G']
        lam, alpha, beta = split_damping(self, A.diagonal().mean(), G.diagonal().mean())
        eye = lambda M: torch.eye(M.shape[0], dtype=M.dtype, device=M.device)  # noqa: E731
        for f, M, damp in (('A', A, alpha), ('G', G, beta)):
            C = st[f + '2']
            st['d_' + f], st['P_' + f] = robust(self, lambda M, d: generalized_eigh(M + d * eye(M), C.to(M.dtype)),
                                                M, damp.item(), f'simultaneous diagonalisation of {f}')
        st['damping_eff'] = torch.as_tensor(lam, dtype=A.dtype, device=A.device)

    def refresh_decomposition(self, st):
        self.correct(st)

    def precondition(self, st, V):
        D = (1 + torch.outer(st['d_G'], st['d_A'])).clamp_min(KEEP)
        return eigenbasis_precondition(V, st['P_G'], st['P_A'], D)

    def diagnostics(self):
        return dict(super().diagnostics(), **mean_power_iters(self))
