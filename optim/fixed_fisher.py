"""
Fixed Fisher: the Kronecker-factored Fisher with exact Tikhonov damping, (A (x) G + lambda I)^-1 vec(V), solved in
the factors' eigenbases (optim/eigenbasis.py), or without an eigendecomposition by CG from KFAC's answer. It removes
the two cross terms that KFAC's factored damping adds; cross_terms = gamma puts gamma of them back (project proposal
"Fixed Fisher for Training DNN", Dash, 2025; the eigenbasis solve as in George et al., 2018, "Fast Approximate
Natural Gradient Descent in a Kronecker-factored Eigenbasis", and kfac-pytorch's default 'eigen' method).
"""

import torch

from optim.eigenbasis import EigenbasisOptimizer
from optim.solves import kfac_cg_solve, kfac_inverses, split_damping


class FixedFisher(EigenbasisOptimizer):
    """Fixed Fisher: per nn.Linear layer, with A = Q_A diag(s_A) Q_A^T and G = Q_G diag(s_G) Q_G^T (the factors of
    optim/capture.py), lambda the damping and alpha = pi sqrt(lambda), beta = sqrt(lambda)/pi KFAC's split of it
    (optim/solves.py):

        U = Q_G [ (Q_G^T V Q_A) / D ] Q_A^T,   D = s_G s_A^T + lambda + gamma (beta 1 s_A^T + alpha s_G 1^T)
          = (A (x) G + lambda I + gamma (beta A (x) I + alpha I (x) G))^-1 vec(V)

    gamma = cross_terms in [0, 1]: 0 (the default) is Fixed Fisher, the exact damped inverse; 1 is KFAC,
    D = (s_G + beta)(s_A + alpha)^T, in the same solve and on the same schedule, so that an ablation over gamma
    changes nothing else. solve='kfac_cg' reaches gamma = 0's U without eigendecompositions: cg_steps of conjugate
    gradients on (A (x) G + lambda I) vec(U) = vec(V), preconditioned by KFAC's damped inverse, from KFAC's answer
    (cg_steps = 0 is KFAC; kfac_cg_solve): a second path from KFAC to Fixed Fisher beside gamma. Then grafting, KL
    clipping, momentum and weight decay as in KroneckerOptimizer.

    Hyperparameters: the shared ones (optim/kronecker.py; damping_mode='relative' makes lambda damping times
    mean(s_A) mean(s_G), the mean eigenvalue of A (x) G), eigen_refresh='none' | 'qr' and eigh_dtype='float32' |
    'float64' (optim/eigenbasis.py), cross_terms=0.0 (gamma), solve=None ('eigen') | 'eigen' | 'kfac_cg',
    cg_steps=2.

    Caveats:
    - A and G are singular whenever a layer sees fewer tokens than its width; lambda alone then bounds the step
      (1/lambda along the null directions), unlike KFAC whose cross terms add more damping there.
    - lambda, alpha and beta are taken at every step from the eigenvalues of the last decomposition (KFAC's
      solve='inverse' freezes them into its inverses until the next refresh).
    """

    def __init__(self, model, cross_terms=0.0, solve=None, cg_steps=2, **kwargs):  # kwargs: EigenbasisOptimizer's
        if not (isinstance(cross_terms, (int, float)) and 0 <= cross_terms <= 1):
            raise ValueError(f"cross_terms must be a number in [0, 1] (0: Fixed Fisher, 1: KFAC), got {cross_terms!r}")
        solve = solve or 'eigen'
        if solve not in ('eigen', 'kfac_cg'):
            raise ValueError(f"unknown solve {solve!r}; known: eigen, kfac_cg")
        if not (isinstance(cg_steps, int) and cg_steps >= 0):
            raise ValueError(f"cg_steps must be an int >= 0, got {cg_steps!r}")
        if solve == 'kfac_cg' and (cross_terms != 0 or kwargs.get('eigen_refresh', 'none') != 'none'):
            raise ValueError("solve='kfac_cg' has no eigenbasis: cross_terms and eigen_refresh='qr' need solve='eigen'")
        self.cross_terms, self.solve, self.cg_steps = float(cross_terms), solve, cg_steps
        super().__init__(model, **kwargs)

    def denominator(self, st):
        s_G, s_A, gamma = st['s_G'], st['s_A'], self.cross_terms
        lam, alpha, beta = split_damping(self, s_A.mean(), s_G.mean())
        st['damping_eff'] = lam
        D = torch.outer(s_G, s_A) + lam
        return D + gamma * (beta * s_A[None, :] + alpha * s_G[:, None]) if gamma else D

    def update_decomposition(self, st):
        if self.solve == 'kfac_cg':
            return kfac_inverses(self, st)  # CG's preconditioner
        super().update_decomposition(st)

    def precondition(self, st, V):
        if self.solve == 'kfac_cg':
            return kfac_cg_solve(self, st, V, self.cg_steps)
        return super().precondition(st, V)
