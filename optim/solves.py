"""
The damped Kronecker solves the methods share, per nn.Linear layer with factors A (d_in [+1]) and G (d_out), gradient
V (d_out, d_in [+1]), lambda the layer's damping (optim/kronecker.py's damping_for), pi = sqrt((tr A/dim A) /
(tr G/dim G)), alpha = pi sqrt(lambda), beta = sqrt(lambda) / pi (split_damping):

    KFAC (kfac_inverses):   U = (G + beta I)^-1 V (A + alpha I)^-1 = ((A + alpha I) (x) (G + beta I))^-1 vec(V)
    eigenbasis (eigen_decompose, then kernels.eigenbasis_precondition with the method's denominator D):
                            U = Q_G [(Q_G^T V Q_A) / D] Q_A^T        (optim/eigenbasis.py; D next to each method's math)
    KFAC-preconditioned CG (kfac_cg_solve): k steps of CG on G X A + lambda X = V from KFAC's answer: k = 0 is KFAC,
                            growing k reaches Fixed Fisher's (A (x) G + lambda I)^-1 vec(V) without an eigh
and robust, the retry every decomposition goes through.
"""

import torch

from kernels import damped_inverse  # (M + damping I)^-1: Triton Newton-Schulz on GPUs, Cholesky otherwise


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
    st['A_inv'] = robust(opt, damped_inverse, A, alpha.item(), 'inverse of A')
    st['G_inv'] = robust(opt, damped_inverse, G, beta.item(), 'inverse of G')
    st['damping_eff'] = torch.as_tensor(lam, dtype=A.dtype, device=A.device)


def eigen_decompose(opt, st, dtype):
    """st['s_A'], st['Q_A'], st['s_G'], st['Q_G']: eigh of the factors in (at least) dtype, retried by opt.robust."""
    for f in 'AG':
        M = st[f].to(torch.promote_types(st[f].dtype, dtype))
        s, Q = robust(opt, eigh_psd, M, 0.0, f'eigh of {f}')
        st['s_' + f], st['Q_' + f] = s.to(st[f].dtype), Q.to(st[f].dtype)


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


def robust(opt, fn, M, damping, what):
    """fn(M, damping) for optimizer opt (an inverse or an eigendecomposition of the factor M, damping >= 0). If it
    raises or gives non-finite values: again in float64 with the same damping (the same damped Fisher, more
    precision; counted in decomp_retries, logged); only if that fails too, in float64 with M shifted by a larger
    damping, 10x plus 1e-6 of M's mean diagonal: a different Fisher (for Fixed Fisher a shift of a factor is a cross
    term), so it is logged as such and counted in decomp_shifts."""
    def attempt(M_, damping_):
        try:
            out = fn(M_, damping_)
            if all(torch.isfinite(t).all() for t in (out if isinstance(out, tuple) else (out,))):
                return out, None
            return None, 'non-finite result'
        except (torch.linalg.LinAlgError, ValueError) as e:  # kernels raise ValueError for a non-PD factor
            return None, str(e).splitlines()[0]

    out, why = attempt(M, damping)
    if out is not None:
        return out
    if M.dtype != torch.float64:  # (already float64: only a shift is left to try)
        opt.decomp_retries += 1
        print(f"{type(opt).__name__}: {what} failed in {M.dtype} ({why}); retrying in float64")
        out, why = attempt(M.double(), damping)
    if out is None:
        more = 10 * float(damping) + 1e-6 * M.diagonal().abs().mean().item() + 1e-30
        opt.decomp_shifts += 1
        print(f"{type(opt).__name__}: {what} failed in float64 too ({why}); shifting the factor by {more:.3g} I "
              f"(a different damped Fisher; counted in decomp_shifts)")
        out, why = attempt(M.double(), more)
        if out is None:
            raise torch.linalg.LinAlgError(f"{type(opt).__name__}: {what} failed even shifted by {more:.3g}: {why}")
    return tuple(t.to(M.dtype) for t in out) if isinstance(out, tuple) else out.to(M.dtype)
