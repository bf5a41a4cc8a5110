"""
KFAC with factored Tikhonov damping (Martens & Grosse, 2015, "Optimizing Neural Networks with Kronecker-factored
Approximate Curvature", ICML; section 6.3 for the pi correction), on the factors of optim/capture.py with tokens
as samples ("expand", Eschenhagen et al., 2023).
"""

import torch

from optim.kronecker import KroneckerOptimizer
from optim.solves import damped_eigen_solve, eigen_decompose, kfac_inverses


class KFAC(KroneckerOptimizer):
    """KFAC: per nn.Linear layer, with A, G its Kronecker factors (symbols of the paper; see optim/capture.py):

        pi = sqrt((tr A / dim A) / (tr G / dim G))
        U  = (G + (sqrt(lambda) / pi) I)^-1  V  (A + pi sqrt(lambda) I)^-1

    which is ((A + pi sqrt(lambda) I) (x) (G + sqrt(lambda)/pi I))^-1 vec(V): the damped Fisher it inverts is
    A (x) G + lambda I plus the two cross terms pi sqrt(lambda) I (x) G and sqrt(lambda)/pi A (x) I (Fixed Fisher
    removes them). Both inverses are refreshed every inv_update_freq steps and applied on every step; then
    grafting, KL clipping, momentum and weight decay as in KroneckerOptimizer. solve='eigen' computes the same U in
    the factors' eigenbases instead (Fixed Fisher's solve with cross_terms = 1: optim/fixed_fisher.py), with lambda
    and pi taken at every step as Fixed Fisher takes them, so that KFAC and Fixed Fisher can differ in the cross
    terms alone.

    Hyperparameters (defaults): lr=1e-3, weight_decay=0.1, momentum=0.9, damping=1e-3 (lambda, > 0),
    damping_mode='absolute' ('relative': lambda * (tr A/dim A)(tr G/dim G), so the two dampings become
    sqrt(lambda) tr A/dim A and sqrt(lambda) tr G/dim G), factor_decay=0.95, factor_update_freq=10,
    inv_update_freq=100, kl_clip=1e-3 (None: off), fisher='empirical' | 'sampled', exclude='',
    max_factor_dim=8192, grafting='none' | 'adam', beta1=0.9, beta2=0.95, eps=1e-8 (AdamW part and grafting),
    adamw_lr_scale=1.0,
    damping_schedule='constant' | 'lm' (Levenberg-Marquardt, see KroneckerOptimizer), damping_update_freq=5,
    solve='inverse' (two inverses, two products per step; '' is 'inverse') | 'eigen' (two eigh, four rotations per
    step).

    Caveats:
    - pi is 1 where a factor's trace is 0 (a layer that has seen no signal yet).
    - The inverses are computed in the factors' dtype (float32; float64 for float64 models); a Cholesky that
      fails is retried in float64 with 10x the damping and logged.
    - Between inverse updates the inverses are stale: factors updated since then act only at the next refresh.
    """

    def __init__(self, model, solve='inverse', **kwargs):  # kwargs: KroneckerOptimizer's (optim.accepted_args)
        solve = solve or 'inverse'
        if solve not in ('inverse', 'eigen'):
            raise ValueError(f"unknown solve {solve!r}; known: inverse, eigen")
        self.solve = solve
        super().__init__(model, **kwargs)

    def update_decomposition(self, st):
        if self.solve == 'eigen':
            return eigen_decompose(self, st, torch.float32)
        kfac_inverses(self, st)

    def precondition(self, st, V):
        if self.solve == 'eigen':
            return damped_eigen_solve(self, st, V, cross_terms=1.0)
        return st['G_inv'] @ V @ st['A_inv']  # (d_out, d_in [+1])
