"""
(M + λI)⁻¹ for a batch of symmetric PSD matrices (..., n, n), as used by KFAC's factored inverses.

Triton path: the Newton–Schulz iteration
    R_k = I - (M + λI) X_k          (residual, and the convergence check ‖R_k‖_F ≤ tol)
    X_{k+1} = X_k + X_k R_k = X_k (2I - (M + λI) X_k)
from X_0 = I / c with c = ‖M + λI‖_F ≥ λ_max. Every eigenvalue of (M + λI) X_0 lies in [λ/c, 1], and since X_k is
a polynomial in M, R_{k+1} = R_k²: the residual's eigenvalues go (1 - μ/c)^(2^k). The slowest is μ = λ_min ≥ λ,
so log2((c/λ)·ln(√n/tol)) steps always suffice (about 25 for c/λ = 1e6), and ‖R‖_F ≤ tol bounds the relative
error of X by tol. Each step is two tiled matmuls with fp32 accumulation; λ and the identity are fused into the
epilogue, so M + λI is never formed. fp32 round-off leaves ‖R‖_F near 2e-8·cond(M + λI)·√n (measured on CPU),
so the default tol = 1e-2 is reached up to cond ≈ 1e4 at n = 4096, 6e4 at n = 64. A matrix that does not reach tol (too ill-conditioned,
M not PSD, max_iters too small) falls back to a float64 Cholesky solve in torch, logged once per process.

Reference path: torch.linalg.cholesky + cholesky_inverse.
"""
import logging
import math

import torch

from kernels._triton import triton, tl, launch, precision, tile_ids, matmul_configs

log = logging.getLogger('nanofisher.kernels')
_warned = False  # the fallback warns once per process, then logs at debug level


def damped_inverse_ref(M, damping):
    # M + λI = L Lᵀ, X = L⁻ᵀ L⁻¹; fp32 (fp64 input stays fp64), retried in fp64 if the fp32 factorization fails
    n = M.shape[-1]
    lam = torch.as_tensor(damping, dtype=torch.float64, device=M.device)[..., None, None]
    A = M.double() if M.dtype == torch.float64 else M.float()
    eye = torch.eye(n, dtype=A.dtype, device=M.device)
    L, info = torch.linalg.cholesky_ex(A + lam.to(A.dtype) * eye)
    if A.dtype != torch.float64 and (info > 0).any():
        L, info = torch.linalg.cholesky_ex(A.double() + lam * eye.double())
    if (info > 0).any():
        i = int((info.flatten() > 0).nonzero()[0])
        raise ValueError(f"damped_inverse: M + damping·I is not positive definite (matrix {i} of the flattened "
                         f"batch); M must be symmetric PSD")
    return torch.cholesky_inverse(L).to(M.dtype)


def damped_inverse_triton(M, damping, tol=1e-2, max_iters=None):
    """Newton–Schulz with Cholesky fallback. damping: float or tensor of M's batch shape (one λ per matrix)."""
    global _warned
    n = M.shape[-1]
    A = M.reshape(-1, n, n).float().contiguous()  # (B, n, n) fp32 working copy
    lam = torch.as_tensor(damping, dtype=torch.float32, device=M.device).expand(M.shape[:-2]).reshape(-1).contiguous()
    X, ok, _ = newton_schulz(A, lam, tol, max_iters)
    bad = (~ok).nonzero().flatten()
    if len(bad):
        msg = (f"damped_inverse: {len(bad)} of {len(ok)} matrices ({n}x{n}) did not reach ‖I - (M+λI)X‖_F ≤ {tol:g} "
               f"by Newton–Schulz in fp32; falling back to a float64 Cholesky solve")
        if _warned:
            log.debug(msg)
        else:
            log.warning(msg + " (said once; later fallbacks are logged at debug level)")
            _warned = True
        X[bad] = damped_inverse_ref(A[bad].double(), lam[bad].double()).float()
    return X.reshape(M.shape).to(M.dtype)


def newton_schulz(A, lam, tol=1e-2, max_iters=None):
    """A (B, n, n) fp32 contiguous, lam (B,) fp32 → X ≈ (A + λI)⁻¹ (B, n, n), converged (B,) bool, steps taken.
    Host syncs only at checks: the first where convergence is possible, then as quadratic convergence predicts."""
    B, n, _ = A.shape
    eye = torch.eye(n, device=A.device)
    tr = A.diagonal(dim1=1, dim2=2).sum(1)
    # c = ‖A + λI‖_F = sqrt(‖A‖_F² + 2λ tr A + nλ²) ≥ λ_max, so X_0 = I/c converges
    c = (A.square().sum((1, 2)) + 2 * lam * tr + n * lam ** 2).sqrt()
    X = eye / c[:, None, None]
    # R_0's slowest eigenvalue is 1 - λ_min/c, with λ ≤ λ_min ≤ mean eigenvalue tr A/n + λ: so no matrix converges
    # before `lo` steps, and all have ‖R‖_F ≤ √n (1 - λ/c)^(2^k) ≤ tol after `hi` steps (in exact arithmetic)
    gap_lo, gap_hi = torch.stack([((tr / n + lam) / c).min(), (lam / c).min()]).tolist()
    lo, hi = _steps(gap_lo, tol), _steps(gap_hi, tol / math.sqrt(n))
    max_iters = min(100, hi + 5) if max_iters is None else max_iters
    next_check = min(lo, max_iters)
    R, Xn, nrm = torch.empty_like(X), torch.empty_like(X), torch.zeros(B, device=A.device)
    r_prev, k = math.inf, 0
    while True:
        check = k >= next_check
        if check:
            nrm.zero_()
        _ns_step(A, X, X, R, lam, nrm, -1.0, 0.0, -1.0, 1.0, check)  # R = I - A X - λ X
        if check:
            r = nrm.sqrt().tolist()  # the one host sync of a check
            ok = [x <= tol for x in r]
            if all(ok) or k >= max_iters:
                break
            r_worst = max(x if math.isfinite(x) else math.inf for x, good in zip(r, ok) if not good)
            # for PSD M the residual only shrinks: growth means M + λI is not PD, a plateau below 1 is fp32 round-off
            if r_worst > 2 * r_prev or (r_prev < 1 and r_worst >= r_prev):
                break
            # once ‖R‖_F < 1, ‖R_{k+j}‖_F ≤ ‖R_k‖_F^(2^j): wait the j steps that need
            j = _steps(1 - r_worst, tol) if r_worst < 1 else 2
            next_check, r_prev = min(k + max(j, 1), max_iters), r_worst
        _ns_step(X, R, X, Xn, lam, nrm, 1.0, 1.0, 0.0, 0.0, False)  # X_{k+1} = X_k R_k + X_k
        X, Xn = Xn, X
        k += 1
    # one last step on the converged ones is cheap accuracy: R_{k+1} = R_k², down to round-off
    _ns_step(X, R, X, Xn, lam, nrm, 1.0, 1.0, 0.0, 0.0, False)
    ok = torch.tensor(ok, device=A.device)
    return torch.where(ok[:, None, None], Xn, X), ok, k


def _steps(gap, tol):
    # smallest k with (1 - gap)^(2^k) ≤ tol
    gap = min(max(gap, 1e-30), 1 - 1e-16)
    return max(0, math.ceil(math.log2(math.log(tol) / math.log1p(-gap))))


def _ns_step(A, B, D, C, lam, nrm, alpha, beta, delta, gamma, norm):
    # C = alpha·A B + (beta + delta·λ_b)·D + gamma·I; with norm, nrm[b] += ‖C_b‖_F²
    batch, n, _ = A.shape
    if triton is None:
        raise RuntimeError("damped_inverse: backend='triton' needs the triton package")
    grid = lambda meta: (triton.cdiv(n, meta['BLOCK_M']) * triton.cdiv(n, meta['BLOCK_N']), batch)
    args = (A, B, D, C, lam, nrm, n, alpha, beta, delta, gamma, norm, precision(A))
    launch(_ns_kernel, _ns_kernel_tuned, grid, args, dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2))


if triton is not None:

    @triton.jit
    def _ns_kernel(a_ptr, b_ptr, d_ptr, c_ptr, lam_ptr, nrm_ptr, n, alpha, beta, delta, gamma,
                   NORM: tl.constexpr, PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        # one (BLOCK_M, BLOCK_N) tile of C_b = alpha·A_b B_b + (beta + delta·λ_b)·D_b + gamma·I; contiguous (B, n, n)
        pid_m, pid_n = tile_ids(tl.program_id(0), n, n, BLOCK_M, BLOCK_N, GROUP_M)
        b = tl.program_id(1)
        off = b.to(tl.int64) * n * n
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + off + rm[:, None] * n + rk[None, :]  # walk the K dimension by pointer increments
        b_ptrs = b_ptr + off + rk[:, None] * n + rn[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, n, BLOCK_K):
            a = tl.load(a_ptrs, mask=(rm[:, None] < n) & (rk[None, :] < n - k0), other=0.0)
            bb = tl.load(b_ptrs, mask=(rk[:, None] < n - k0) & (rn[None, :] < n), other=0.0)
            acc = tl.dot(a, bb, acc, input_precision=PREC)  # fp32 accumulation
            a_ptrs += BLOCK_K
            b_ptrs += BLOCK_K * n
        mask = (rm[:, None] < n) & (rn[None, :] < n)
        idx = off + rm[:, None] * n + rn[None, :]
        d = tl.load(d_ptr + idx, mask=mask, other=0.0)
        lam = tl.load(lam_ptr + b)
        c = alpha * acc + (beta + delta * lam) * d + tl.where(rm[:, None] == rn[None, :], gamma, 0.0)
        c = tl.where(mask, c, 0.0)
        tl.store(c_ptr + idx, c, mask=mask)
        if NORM:
            tl.atomic_add(nrm_ptr + b, tl.sum(c * c))  # ‖C_b‖_F², summed over tiles

    _ns_kernel_tuned = triton.autotune(matmul_configs(), key=['n'], reset_to_zero=['nrm_ptr'])(_ns_kernel)
