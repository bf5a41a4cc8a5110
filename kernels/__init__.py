"""
Kernels for the Fisher preconditioners: each a Triton kernel beside a plain-torch reference it is tested against.

    damped_inverse(M, damping)          (M + damping·I)⁻¹, M (..., n, n) symmetric PSD            KFAC inverses
    eigenbasis_precondition(V, Q_G, Q_A, D)
                                        Q_G [(Q_Gᵀ V Q_A) ⊘ D] Q_Aᵀ                                the eigenbasis solve
                                        (Fixed Fisher's D = s_G s_Aᵀ + λ, EKFAC's, ...: optim/solves.py)

backend=None picks Triton for CUDA tensors (torch for float64 inputs, or where triton is missing) and torch
otherwise; 'triton' forces the kernel (on CPU it needs TRITON_INTERPRET=1 set before `import kernels`), 'torch'
the reference. Inputs are checked before any work: wrong shapes, damping ≤ 0, D ≤ 0 or NaN/Inf raise ValueError.
The NaN/Inf check costs one host sync per call.
"""
import logging
import numbers

import torch

from kernels import _triton
from kernels.inverse import damped_inverse_ref, damped_inverse_triton
from kernels.eigenbasis import eigenbasis_precondition_ref, eigenbasis_precondition_triton

log = logging.getLogger('nanofisher.kernels')
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # the kernels compute in fp32 from these


def damped_inverse(M, damping, backend=None, *, tol=1e-2, max_iters=None):
    """(M + damping·I)⁻¹ for symmetric PSD M (..., n, n); damping a number or one per matrix (M's batch shape).
    Triton: Newton–Schulz to ‖I - (M + λI)X‖_F ≤ tol (which bounds X's relative error); a matrix that does not get
    there falls back to a float64 Cholesky solve, logged once. torch: Cholesky (tol, max_iters unused)."""
    _matrix('damped_inverse', 'M', M)
    lam = _damping('damped_inverse', damping, M)
    if not tol > 0 or (max_iters is not None and max_iters < 0):
        raise ValueError(f"damped_inverse: need tol > 0 and max_iters ≥ 0, got tol={tol}, max_iters={max_iters}")
    backend = _backend('damped_inverse', backend, [M])
    sym = 1e-3 if M.dtype in (torch.float32, torch.float64) else 1e-2  # rounding of a computed XᵀX
    checks = {'M has NaN/Inf': torch.isfinite(M).all(),
              'damping must be finite and > 0': ((lam > 0) & torch.isfinite(lam)).all(),
              f'M is not symmetric (|M - Mᵀ| > {sym:g}·max|M|)': (M - M.mT).abs().amax() <= sym * M.abs().amax()}
    _require('damped_inverse', checks)
    if backend == 'torch':
        return damped_inverse_ref(M, lam)
    return damped_inverse_triton(M, lam, tol=tol, max_iters=max_iters)


def eigenbasis_precondition(V, Q_G, Q_A, D, backend=None):
    """U = Q_G [(Q_Gᵀ V Q_A) ⊘ D] Q_Aᵀ for V (..., d_out, d_in), Q_G (d_out, d_out), Q_A (d_in, d_in) and the
    denominator D (d_out, d_in) > 0 (these shared, or batched like V): (A ⊗ G + λI)⁻¹ vec(V) for D = s_G s_Aᵀ + λ.
    Q_G, Q_A need not be orthogonal (KFAC-corrected's simultaneous diagonalisation). Returns U in V's dtype."""
    name = 'eigenbasis_precondition'
    if not torch.is_tensor(V) or V.dim() < 2:
        raise ValueError(f"{name}: V must be a tensor (..., d_out, d_in), got {_desc(V)}")
    m, n = V.shape[-2:]
    batch = V.shape[:-2]
    for arg, t, shape in [('Q_G', Q_G, (m, m)), ('Q_A', Q_A, (n, n)), ('D', D, (m, n))]:
        if not torch.is_tensor(t) or t.shape not in (torch.Size(shape), batch + shape):
            raise ValueError(f"{name}: V is {tuple(V.shape)}, so {arg} must be {shape} or {tuple(batch + shape)}, "
                             f"got {_desc(t)}")
    tensors = dict(V=V, Q_G=Q_G, Q_A=Q_A, D=D)
    backend = _backend(name, backend, list(tensors.values()))
    checks = {f'{k} has NaN/Inf': torch.isfinite(t).all() for k, t in tensors.items()}
    checks['the denominator D must be > 0 everywhere'] = D.min() > 0
    _require(name, checks)
    fn = eigenbasis_precondition_ref if backend == 'torch' else eigenbasis_precondition_triton
    return fn(V, Q_G, Q_A, D)


def _backend(name, backend, tensors):
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"{name}: inputs are on different devices: {sorted(map(str, devices))}")
    device = devices.pop()
    if backend is None:
        fits = _triton.triton is not None and all(t.dtype in TRITON_DTYPES for t in tensors)
        return 'triton' if device.type == 'cuda' and fits else 'torch'
    if backend not in ('triton', 'torch'):
        raise ValueError(f"{name}: unknown backend {backend!r}; expected None, 'triton' or 'torch'")
    if backend == 'triton':
        if _triton.triton is None:
            raise RuntimeError(f"{name}: backend='triton' needs the triton package; use backend='torch'")
        if device.type != 'cuda' and not _triton.INTERPRET:
            raise RuntimeError(f"{name}: backend='triton' on {device.type} tensors runs the Triton interpreter: set "
                               f"TRITON_INTERPRET=1 before importing kernels, or use backend='torch'")
        for t in tensors:
            if t.dtype not in TRITON_DTYPES:
                raise ValueError(f"{name}: the Triton kernels take float32/bfloat16/float16, got {t.dtype}; "
                                 f"use backend='torch' for float64")
    return backend


def _matrix(name, arg, M):
    if not torch.is_tensor(M) or M.dim() < 2 or M.shape[-1] != M.shape[-2] or M.shape[-1] == 0:
        raise ValueError(f"{name}: {arg} must be a batch of square matrices (..., n, n), got {_desc(M)}")
    if not M.is_floating_point():
        raise ValueError(f"{name}: {arg} must be floating point, got {M.dtype}")


def _damping(name, damping, M):
    # a number, or a tensor broadcastable to M's batch shape (one λ per matrix) → float32 tensor of that shape
    if not (isinstance(damping, numbers.Real) or torch.is_tensor(damping)):
        raise ValueError(f"{name}: damping must be a number or a tensor, got {type(damping).__name__}")
    lam = torch.as_tensor(damping, dtype=torch.float64 if M.dtype == torch.float64 else torch.float32,
                          device=M.device)
    try:
        return lam.expand(M.shape[:-2])
    except RuntimeError:
        raise ValueError(f"{name}: damping of shape {tuple(lam.shape)} does not match M's batch shape "
                         f"{tuple(M.shape[:-2])}") from None


def _require(name, checks):
    # all the data-dependent checks (0-d bool tensors, one device) in one host sync
    ok = torch.stack(list(checks.values())).tolist()
    for message, good in zip(checks, ok):
        if not good:
            raise ValueError(f"{name}: {message}")


def _desc(t):
    return f"shape {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__
