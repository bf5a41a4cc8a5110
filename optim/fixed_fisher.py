"""
Fixed Fisher: the Kronecker-factored Fisher with exact Tikhonov damping, (A (x) G + lambda I)^-1 vec(V), solved in
the factors' eigenbases (optim/solves.py), or without an eigendecomposition by CG from KFAC's answer. It removes the
two cross terms that KFAC's factored damping adds; cross_terms = gamma puts gamma of them back (project proposal
"Fixed Fisher for Training DNN", Dash, 2025; the eigenbasis solve as in George et al., 2018, "Fast Approximate
Natural Gradient Descent in a Kronecker-factored Eigenbasis"; the QR refresh as in Vyas et al., 2024, SOAP).
"""

import torch

from optim.kronecker import KroneckerOptimizer
from optim.solves import damped_eigen_solve, eigen_decompose, kfac_cg_solve, kfac_inverses, qr_refresh


class FixedFisher(KroneckerOptimizer):
    """Fixed Fisher: per nn.Linear layer, with A = Q_A diag(s_A) Q_A^T and G = Q_G diag(s_G) Q_G^T (the factors of
    optim/capture.py, symbols as in the docs):

        U = Q_G [ (Q_G^T V Q_A) / (s_G s_A^T + lambda) ] Q_A^T  =  (A (x) G + lambda I)^-1 vec(V)

    the exact damped inverse, without KFAC's cross terms pi sqrt(lambda) I (x) G and sqrt(lambda)/pi A (x) I.
    cross_terms = gamma in [0, 1] adds gamma times them back (damped_eigen_solve): gamma = 0 is Fixed Fisher, 1 is
    KFAC in the same eigenbasis solve, on the same schedule, so an ablation over gamma changes nothing else.
    solve='kfac_cg' reaches the same U without eigendecompositions: cg_steps of conjugate gradients on
    (A (x) G + lambda I) vec(U) = vec(V) preconditioned by KFAC's damped inverse, from KFAC's answer (cg_steps = 0
    is KFAC; kfac_cg_solve), a second path from KFAC to Fixed Fisher beside gamma.
    Eigendecompositions every inv_update_freq steps; with eigen_refresh='qr' the eigenbases are also refreshed on
    the factor-update steps in between by one power iteration + QR from the previous basis (cheaper than eigh).
    Then grafting, KL clipping, momentum and weight decay as in KroneckerOptimizer.

    Hyperparameters (defaults): lr=1e-3, weight_decay=0.1, momentum=0.9, damping=1e-3 (lambda, > 0),
    damping_mode='absolute' ('relative': lambda * mean(s_A) mean(s_G), the mean eigenvalue of A (x) G),
    factor_decay=0.95, factor_update_freq=10, inv_update_freq=100, kl_clip=1e-3 (None: off),
    fisher='empirical' | 'sampled', exclude='', max_factor_dim=8192, grafting='none' | 'adam', beta1=0.9,
    beta2=0.95, eps=1e-8 (AdamW part and grafting), adamw_lr_scale=1.0, eigen_refresh='eigh' | 'qr',
    eigh_dtype='float32' | 'float64' (the dtype eigh runs in; float64 models always use float64),
    damping_schedule='constant' | 'lm' (Levenberg-Marquardt, see KroneckerOptimizer), damping_update_freq=5,
    cross_terms=0.0 (gamma, in [0, 1]), solve='eigen' | 'kfac_cg' ('' is 'eigen'), cg_steps=2.

    Caveats:
    - A and G are singular whenever a layer sees fewer tokens than its width; lambda alone then bounds the step
      (1/lambda along the null directions), unlike KFAC whose cross terms add more damping there.
    - An eigh that fails (or gives non-finite values) is retried in float64 with a small diagonal shift, logged.
    - A QR refresh is an approximation: the eigenvalues are Rayleigh quotients in the refreshed basis.
    """

    def __init__(self, model, lr=1e-3, weight_decay=0.1, momentum=0.9, damping=1e-3, damping_mode='absolute',
                 factor_decay=0.95, factor_update_freq=10, inv_update_freq=100, kl_clip=1e-3, fisher='empirical',
                 exclude='', max_factor_dim=8192, grafting='none', beta1=0.9, beta2=0.95, eps=1e-8,
                 adamw_lr_scale=1.0, damping_schedule='constant', damping_update_freq=5,
                 eigen_refresh='eigh', eigh_dtype='float32', cross_terms=0.0, solve='eigen', cg_steps=2):
        if eigen_refresh not in ('eigh', 'qr'):
            raise ValueError(f"unknown eigen_refresh {eigen_refresh!r}; known: eigh, qr")
        if eigh_dtype not in ('float32', 'float64'):
            raise ValueError(f"unknown eigh_dtype {eigh_dtype!r}; known: float32, float64")
        if not (isinstance(cross_terms, (int, float)) and 0 <= cross_terms <= 1):
            raise ValueError(f"cross_terms must be a number in [0, 1] (0: Fixed Fisher, 1: KFAC), got {cross_terms!r}")
        solve = solve or 'eigen'
        if solve not in ('eigen', 'kfac_cg'):
            raise ValueError(f"unknown solve {solve!r}; known: eigen, kfac_cg")
        if not (isinstance(cg_steps, int) and cg_steps >= 0):
            raise ValueError(f"cg_steps must be an int >= 0, got {cg_steps!r}")
        if solve == 'kfac_cg' and (cross_terms != 0 or eigen_refresh != 'eigh'):
            raise ValueError("solve='kfac_cg' has no eigenbasis: cross_terms and eigen_refresh='qr' need solve='eigen'")
        self.eigen_refresh, self.eigh_dtype = eigen_refresh, getattr(torch, eigh_dtype)
        self.cross_terms, self.solve, self.cg_steps = float(cross_terms), solve, cg_steps
        super().__init__(model, lr=lr, weight_decay=weight_decay, momentum=momentum, damping=damping,
                         damping_mode=damping_mode, factor_decay=factor_decay, factor_update_freq=factor_update_freq,
                         inv_update_freq=inv_update_freq, kl_clip=kl_clip, fisher=fisher, exclude=exclude,
                         max_factor_dim=max_factor_dim, grafting=grafting, beta1=beta1, beta2=beta2, eps=eps,
                         adamw_lr_scale=adamw_lr_scale,
                         damping_schedule=damping_schedule, damping_update_freq=damping_update_freq)

    def update_decomposition(self, st):
        if self.solve == 'kfac_cg':
            return kfac_inverses(self, st)  # CG's preconditioner
        eigen_decompose(self, st, self.eigh_dtype)

    def refresh_decomposition(self, st):
        if self.eigen_refresh == 'qr':
            for f in 'AG':
                st['s_' + f], st['Q_' + f] = qr_refresh(st[f], st['Q_' + f])

    def precondition(self, st, V):
        if self.solve == 'kfac_cg':
            return kfac_cg_solve(self, st, V, self.cg_steps)
        return damped_eigen_solve(self, st, V, self.cross_terms)
