"""
Fixed Fisher: the Kronecker-factored Fisher with exact Tikhonov damping, (A (x) G + lambda I)^-1 vec(V), solved in
the factors' eigenbases; cross_terms = gamma puts back gamma times KFAC's cross terms (gamma = 1 is KFAC). It removes the two cross terms that KFAC's factored damping adds (project proposal
"Fixed Fisher for Training DNN", Dash, 2025; the eigenbasis solve as in George et al., 2018, "Fast Approximate
Natural Gradient Descent in a Kronecker-factored Eigenbasis"; the QR refresh as in Vyas et al., 2024, SOAP).
"""

import torch

# U = Q_G [(Q_G^T V Q_A) / (s_G s_A^T + damping)] Q_A^T: a fused Triton kernel on GPUs, three matmuls otherwise
from kernels import eigenbasis_precondition
from optim.kronecker import KroneckerOptimizer


def eigh_psd(M, damping=0.0):
    """(s, Q) with M + damping I = Q diag(s) Q^T, eigenvalues ascending; the tiny negative ones that rounding
    gives a positive semi-definite M are clamped to 0."""
    s, Q = torch.linalg.eigh(M + damping * torch.eye(M.shape[0], dtype=M.dtype, device=M.device))
    return s.clamp(min=0), Q


def qr_refresh(M, Q):
    """One power iteration from the previous eigenbasis Q, orthonormalised by QR (SOAP's refresh); eigenvalues are
    the new Rayleigh quotients. Columns go in descending order of their Rayleigh quotients, so QR keeps the large
    ones and the (near-)null directions come last, where QR makes them the orthogonal complement."""
    order = torch.argsort((Q * (M @ Q)).sum(0), descending=True)
    Q, _ = torch.linalg.qr(M @ Q[:, order])
    return (Q * (M @ Q)).sum(0).clamp(min=0), Q


def eigen_decompose(opt, st, dtype):
    """st['s_A'], st['Q_A'], st['s_G'], st['Q_G']: eigh of the factors in (at least) dtype, retried by opt.robust."""
    for f in 'AG':
        M = st[f].to(torch.promote_types(st[f].dtype, dtype))
        s, Q = opt.robust(eigh_psd, M, 0.0, f'eigh of {f}')
        st['s_' + f], st['Q_' + f] = s.to(st[f].dtype), Q.to(st[f].dtype)


def damped_eigen_solve(opt, st, V, cross_terms):
    """U = Q_G [(Q_G^T V Q_A) / D] Q_A^T with, for gamma = cross_terms,
        D = s_G s_A^T + lambda + gamma (beta s_A^T + alpha s_G),   alpha = pi sqrt(lambda), beta = sqrt(lambda) / pi,
    pi = sqrt(mean(s_A) / mean(s_G)) (KFAC's; 1 where a factor is 0): the damped Fisher A (x) G + lambda I +
    gamma (beta A (x) I + alpha I (x) G), i.e. Fixed Fisher at gamma = 0 and KFAC's (A + alpha I) (x) (G + beta I) at 1.
    One kernel call: D = (s_G + gamma beta)(s_A + gamma alpha)^T + lambda (1 - gamma^2)."""
    a, g = st['s_A'].mean(), st['s_G'].mean()
    lam = opt.damping_for(a, g)
    st['damping_eff'] = lam
    if cross_terms == 0:
        return eigenbasis_precondition(V, st['Q_G'], st['s_G'], st['Q_A'], st['s_A'], lam)
    pi = torch.where((a > 0) & (g > 0), (a / g).sqrt(), torch.ones_like(a))
    root = torch.as_tensor(lam, dtype=a.dtype, device=a.device).sqrt()
    return eigenbasis_precondition(V, st['Q_G'], st['s_G'] + cross_terms * root / pi, st['Q_A'],
                                   st['s_A'] + cross_terms * pi * root, lam * (1 - cross_terms ** 2))


class FixedFisher(KroneckerOptimizer):
    """Fixed Fisher: per nn.Linear layer, with A = Q_A diag(s_A) Q_A^T and G = Q_G diag(s_G) Q_G^T (the factors of
    optim/kronecker.py, symbols as in the docs):

        U = Q_G [ (Q_G^T V Q_A) / (s_G s_A^T + lambda) ] Q_A^T  =  (A (x) G + lambda I)^-1 vec(V)

    the exact damped inverse, without KFAC's cross terms pi sqrt(lambda) I (x) G and sqrt(lambda)/pi A (x) I.
    cross_terms = gamma in [0, 1] adds gamma times them back (damped_eigen_solve): gamma = 0 is Fixed Fisher, 1 is
    KFAC in the same eigenbasis solve, on the same schedule, so an ablation over gamma changes nothing else.
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
    cross_terms=0.0 (gamma, in [0, 1]).

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
                 eigen_refresh='eigh', eigh_dtype='float32', cross_terms=0.0):
        if eigen_refresh not in ('eigh', 'qr'):
            raise ValueError(f"unknown eigen_refresh {eigen_refresh!r}; known: eigh, qr")
        if eigh_dtype not in ('float32', 'float64'):
            raise ValueError(f"unknown eigh_dtype {eigh_dtype!r}; known: float32, float64")
        if not (isinstance(cross_terms, (int, float)) and 0 <= cross_terms <= 1):
            raise ValueError(f"cross_terms must be a number in [0, 1] (0: Fixed Fisher, 1: KFAC), got {cross_terms!r}")
        self.eigen_refresh, self.eigh_dtype = eigen_refresh, getattr(torch, eigh_dtype)
        self.cross_terms = float(cross_terms)
        super().__init__(model, lr=lr, weight_decay=weight_decay, momentum=momentum, damping=damping,
                         damping_mode=damping_mode, factor_decay=factor_decay, factor_update_freq=factor_update_freq,
                         inv_update_freq=inv_update_freq, kl_clip=kl_clip, fisher=fisher, exclude=exclude,
                         max_factor_dim=max_factor_dim, grafting=grafting, beta1=beta1, beta2=beta2, eps=eps,
                         adamw_lr_scale=adamw_lr_scale,
                         damping_schedule=damping_schedule, damping_update_freq=damping_update_freq)

    def update_decomposition(self, st):
        eigen_decompose(self, st, self.eigh_dtype)

    def refresh_decomposition(self, st):
        if self.eigen_refresh == 'qr':
            for f in 'AG':
                st['s_' + f], st['Q_' + f] = qr_refresh(st[f], st['Q_' + f])

    def precondition(self, st, V):
        return damped_eigen_solve(self, st, V, self.cross_terms)
