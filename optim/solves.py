"""
The damped Kronecker solves the methods share, per nn.Linear layer with factors A (d_in [+1]) and G (d_out), gradient
V (d_out, d_in [+1]), lambda the layer's damping (optim/kronecker.py's damping_for), pi = sqrt((tr A/dim A) /
(tr G/dim G)), alpha = pi sqrt(lambda), beta = sqrt(lambda) / pi:

    KFAC (kfac_inverses):          U = (G + beta I)^-1 V (A + alpha I)^-1
                                     = ((A + alpha I) (x) (G + beta I))^-1 vec(V)
    eigenbasis (damped_eigen_solve): U = Q_G [(Q_G^T V Q_A) / D] Q_A^T,  D = s_G s_A^T + lambda + gamma (beta s_A^T + alpha s_G)
                                     = (A (x) G + lambda I + gamma (beta A (x) I + alpha I (x) G))^-1 vec(V)
                                     gamma = 0: Fixed Fisher; gamma = 1: KFAC again, (s_G + beta)(s_A + alpha)^T
    KFAC-preconditioned CG (kfac_cg_solve): k steps of CG on G X A + lambda X = V from KFAC's answer: k = 0 is KFAC,
                                     growing k reaches Fixed Fisher's (A (x) G + lambda I)^-1 vec(V) without an eigh
"""

import torch

from kernels import damped_inverse  # (M + damping I)^-1: Triton Newton-Schulz on GPUs, Cholesky otherwise
from kernels import eigenbasis_precondition  # the eigenbasis solve: a fused Triton kernel on GPUs, matmuls otherwise


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


def split_damping(opt, a, g):
    """(lambda, alpha, beta) from a = tr A / dim A, g = tr G / dim G: KFAC's split of lambda over the two factors
    (lambda a float with damping_mode='absolute', a tensor with 'relative')."""
    lam = opt.damping_for(a, g)
    pi = torch.where((a > 0) & (g > 0), (a / g).sqrt(), torch.ones_like(a))  # 1 for a factor without signal yet
    root = lam ** 0.5
    return lam, pi * root, root / pi


def kfac_inverses(opt, st):
    """st['A_inv'] = (A + alpha I)^-1, st['G_inv'] = (G + beta I)^-1 (by opt.robust), st['damping_eff'] = lambda."""
    A, G = st['A'], st['G']
    lam, alpha, beta = split_damping(opt, A.diagonal().mean(), G.diagonal().mean())
    st['A_inv'] = opt.robust(damped_inverse, A, alpha.item(), 'inverse of A')
    st['G_inv'] = opt.robust(damped_inverse, G, beta.item(), 'inverse of G')
    st['damping_eff'] = torch.as_tensor(lam, dtype=A.dtype, device=A.device)


def eigen_decompose(opt, st, dtype):
    """st['s_A'], st['Q_A'], st['s_G'], st['Q_G']: eigh of the factors in (at least) dtype, retried by opt.robust."""
    for f in 'AG':
        M = st[f].to(torch.promote_types(st[f].dtype, dtype))
        s, Q = opt.robust(eigh_psd, M, 0.0, f'eigh of {f}')
        st['s_' + f], st['Q_' + f] = s.to(st[f].dtype), Q.to(st[f].dtype)


def damped_eigen_solve(opt, st, V, cross_terms):
    """The eigenbasis solve with gamma = cross_terms (module docstring), mean(s) for tr/dim. One kernel call:
    D = (s_G + gamma beta)(s_A + gamma alpha)^T + lambda (1 - gamma^2)."""
    lam, alpha, beta = split_damping(opt, st['s_A'].mean(), st['s_G'].mean())
    st['damping_eff'] = lam
    if cross_terms == 0:
        return eigenbasis_precondition(V, st['Q_G'], st['s_G'], st['Q_A'], st['s_A'], lam)
    return eigenbasis_precondition(V, st['Q_G'], st['s_G'] + cross_terms * beta, st['Q_A'],
                                   st['s_A'] + cross_terms * alpha, lam * (1 - cross_terms ** 2))


def kfac_cg_solve(opt, st, V, steps):
    """steps of conjugate gradients on G X A + lambda X = V ((A (x) G + lambda I) vec(X) = vec(V), the current factors),
    preconditioned by KFAC's damped inverse P(R) = G_inv R A_inv (of the last refresh) and started from KFAC's answer
    X = P(V). CG minimises the error in the (A (x) G + lambda I)-norm over a growing Krylov space, so each step can
    only bring X closer to Fixed Fisher's. A step: G X A and P(R), four matmuls."""
    A, G = st['A'], st['G']
    lam = opt.damping_for(A.diagonal().mean(), G.diagonal().mean())
    st['damping_eff'] = lam
    precondition = lambda R: st['G_inv'] @ R @ st['A_inv']
    X = precondition(V)
    if steps == 0:
        return X
    tiny = torch.finfo(V.dtype).tiny
    R = V - (G @ X @ A + lam * X)
    Z = precondition(R)
    D, rz = Z, (R * Z).sum()
    for k in range(steps):
        MD = G @ D @ A + lam * D
        step = rz / (D * MD).sum().clamp_min(tiny)  # 0 once R is 0: X stays
        X, R = X + step * D, R - step * MD
        if k < steps - 1:  # the next direction (not needed after the last step)
            Z = precondition(R)
            rz, rz_old = (R * Z).sum(), rz
            D = Z + (rz / rz_old.clamp_min(tiny)) * D
    return X
