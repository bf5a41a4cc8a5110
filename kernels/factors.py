"""
Running Kronecker factor update, in place:  F ← decay·F + scale·XᵀX
F (..., d, d) symmetric, X (..., N, d) (N tokens, d features: activations a_m or output gradients ĝ_m as rows).
For the DESIGN's EMA, decay = factor_decay and scale = (1 - factor_decay)/N.

Triton path: one program per tile of the upper triangle (i ≤ j) of F, fp32 accumulation over the tokens; it reads
only F's upper triangle and writes the tile and its mirror image, so F comes out exactly symmetric with half the
flops of a full XᵀX. bf16 X is multiplied natively on tensor cores; fp32 X with tf32x3.

Reference path: the same in fp32 torch (F is assumed symmetric there too).
"""
import torch

from kernels._triton import triton, tl, launch, precision, INTERPRET


def factor_update_ref(F, X, decay, scale):
    F.copy_(decay * F.float() + scale * (X.mT.float() @ X.float()))
    return F


def factor_update_triton(F, X, decay, scale):
    if triton is None:
        raise RuntimeError("factor_update: backend='triton' needs the triton package")
    d, N = F.shape[-1], X.shape[-2]
    Ft = F if F.is_contiguous() else F.contiguous()  # the kernel writes through a (B, d, d) view
    Fb, Xb = Ft.view(-1, d, d), X.reshape(-1, N, d)
    grid = lambda meta: (triton.cdiv(d, meta['BLOCK_D']), triton.cdiv(d, meta['BLOCK_D']), Fb.shape[0])
    # the interpreter multiplies bf16 tiles as raw integers (numpy has no bf16), so it gets fp32 tiles (exact too)
    upcast = INTERPRET and X.dtype == torch.bfloat16
    args = (Fb, Xb, float(decay), float(scale), N, d, *Fb.stride(), *Xb.stride(), upcast, precision(X))
    launch(_factor_kernel, _factor_kernel_tuned, grid, args, dict(BLOCK_D=32, BLOCK_K=32))
    if Ft is not F:
        F.copy_(Ft)
    return F


if triton is not None:

    @triton.jit
    def _factor_kernel(f_ptr, x_ptr, decay, scale, N, d, s_fb, s_fm, s_fn, s_xb, s_xk, s_xd,
                       UPCAST: tl.constexpr, PREC: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
        # tile (i, j) of F_b ← decay·F_b + scale·X_bᵀ X_b, for i ≤ j only, mirrored into tile (j, i)
        i, j = tl.program_id(0), tl.program_id(1)
        if i > j:
            return  # the lower triangle is written by its mirror tile
        b = tl.program_id(2).to(tl.int64)
        rows = i * BLOCK_D + tl.arange(0, BLOCK_D)
        cols = j * BLOCK_D + tl.arange(0, BLOCK_D)
        rk = tl.arange(0, BLOCK_K)
        x_ptr += b * s_xb
        acc = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
        for k0 in range(0, N, BLOCK_K):
            ks = k0 + rk
            xi = tl.load(x_ptr + ks[:, None] * s_xk + rows[None, :] * s_xd, mask=(ks[:, None] < N) & (rows[None, :] < d), other=0.0)
            xj = tl.load(x_ptr + ks[:, None] * s_xk + cols[None, :] * s_xd, mask=(ks[:, None] < N) & (cols[None, :] < d), other=0.0)
            if UPCAST:
                xi, xj = xi.to(tl.float32), xj.to(tl.float32)
            acc = tl.dot(tl.trans(xi), xj, acc, input_precision=PREC)  # (XᵀX)[rows, cols], fp32 accumulation
        f_ptr += b * s_fb
        upper = (rows[:, None] <= cols[None, :]) & (cols[None, :] < d)
        f = tl.load(f_ptr + rows[:, None] * s_fm + cols[None, :] * s_fn, mask=upper, other=0.0).to(tl.float32)
        out = (decay * f + scale * acc).to(f_ptr.dtype.element_ty)
        tl.store(f_ptr + rows[:, None] * s_fm + cols[None, :] * s_fn, out, mask=upper)
        # mirror: F[c, r] = out[r, c] for r < c, stored as the transposed tile so the writes stay row-major
        strict = (rows[None, :] < cols[:, None]) & (cols[:, None] < d)
        tl.store(f_ptr + cols[:, None] * s_fm + rows[None, :] * s_fn, tl.trans(out), mask=strict)

    _factor_kernel_tuned = triton.autotune(
        [triton.Config({'BLOCK_D': bd, 'BLOCK_K': bk}, num_warps=w, num_stages=s)
         for bd, bk, w, s in [(32, 32, 2, 2), (64, 32, 4, 3), (64, 64, 4, 3), (128, 32, 8, 3), (128, 64, 8, 2)]],
        key=['N', 'd'], restore_value=['f_ptr'])(_factor_kernel)
