"""
KFAC with factored Tikhonov damping (Martens & Grosse, 2015, "Optimizing Neural Networks with Kronecker-factored
Approximate Curvature", ICML; section 6.3 for the pi correction), on the factors of optim/capture.py with tokens
as samples ("expand", Eschenhagen et al., 2023).
"""

import torch

from optim.kronecker import KroneckerOptimizer
from optim.solves import eigen_decompose, kfac_inverses, split_damping
from kernels import eigenbasis_precondition


class KFAC(KroneckerOptimizer):
    """KFAC: per nn.Linear layer, with A, G its Kronecker factors (symbols of the paper; see optim/capture.py):

        pi = sqrt((tr A / dim A) / (tr G / dim G)),   alpha = pi sqrt(lambda),   beta = sqrt(lambda) / pi
        U  = (G + beta I)^-1  V  (A + alpha I)^-1

    which is ((A + alpha I) (x) (G + beta I))^-1 vec(V): the damped Fisher it inverts is A (x) G + lambda I plus the
    two cross terms alpha I (x) G and beta A (x) I (Fixed Fisher removes them). solve='inverse' (the default):
    both inverses are refreshed every inv_update_freq steps and applied on every step (two products). solve='eigen':
    the same U in the factors' eigenbases (optim/eigenbasis.py) with

        D = (s_G + beta)(s_A + alpha)^T                          (Fixed Fisher's D with cross_terms = 1)

    lambda, alpha and beta taken at every step as Fixed Fisher takes them, so that KFAC and Fixed Fisher can differ
    in the cross terms alone. Then grafting, KL clipping, momentum and weight decay as in KroneckerOptimizer.

    Hyperparameters: the shared ones (optim/kronecker.py; damping_mode='relative' makes the two dampings
    sqrt(lambda) tr A/dim A and sqrt(lambda) tr G/dim G) and solve=None ('inverse') | 'inverse' | 'eigen'.

    Caveats:
    - pi is 1 where a factor's trace is 0 (a layer that has seen no signal yet).
    - With solve='inverse' the inverses are stale between refreshes: factors updated since, and a new lambda
      (damping_schedule='lm'), act only at the next refresh.
    """

    def __init__(self, model, solve=None, **shared):  # shared: KroneckerOptimizer's
        solve = solve or 'inverse'
        if solve not in ('inverse', 'eigen'):
            raise ValueError(f"unknown solve {solve!r}; known: inverse, eigen")
        self.solve = solve
        super().__init__(model, **shared)

    def update_decomposition(self, st):
        if self.solve == 'eigen':
            return eigen_decompose(self, st, torch.float32)
        kfac_inverses(self, st)

    def precondition(self, st, V):
        if self.solve == 'inverse':
            return st['G_inv'] @ V @ st['A_inv']  # (d_out, d_in [+1])
        lam, alpha, beta = split_damping(self, st['s_A'].mean(), st['s_G'].mean())
        st['damping_eff'] = lam
        return eigenbasis_precondition(V, st['Q_G'], st['Q_A'], torch.outer(st['s_G'] + beta, st['s_A'] + alpha))
