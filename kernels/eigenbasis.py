"""
Fixed Fisher's exact Tikhonov preconditioning in the Kronecker eigenbasis, A = Q_A diag(s_A) Q_Aᵀ, G = Q_G diag(s_G) Q_Gᵀ:
    U = Q_G [(Q_Gᵀ V Q_A) ⊘ (s_G s_Aᵀ + λ)] Q_Aᵀ = (A ⊗ G + λI)⁻¹ vec(V)
V is the (d_out, d_in) gradient (or a batch (..., d_out, d_in)); Q_G (d_out, d_out), s_G (d_out,), Q_A (d_in, d_in),
s_A (d_in,), either shared by the batch or batched like V.

Triton path: four launches of one tiled matmul kernel, fp32 accumulation and fp32 intermediates,
    P = Q_Gᵀ V,   W = P Q_A,   Y = Q_G (W ⊘ (s_G s_Aᵀ + λ)),   U = Y Q_Aᵀ
The division is done on each tile of W as the third launch loads it, so the rotated, divided gradient lives only in
registers between the division and the second rotation (no round trip to global memory, and s_G s_Aᵀ + λ is never
materialized). Transposes are strides, never copies.

Reference path: the same formula with unfused torch matmuls, in fp32.
"""
import torch

from kernels._triton import triton, tl, launch, precision, tile_ids, matmul_configs


def eigenbasis_precondition_ref(V, Q_G, s_G, Q_A, s_A, damping):
    f = torch.float64 if V.dtype == torch.float64 else torch.float32
    Q_G, s_G, Q_A, s_A = Q_G.to(f), s_G.to(f), Q_A.to(f), s_A.to(f)
    W = Q_G.mT @ V.to(f) @ Q_A  # rotate into the eigenbasis
    W = W / (s_G[..., :, None] * s_A[..., None, :] + damping)  # divide by the damped Kronecker eigenvalues
    return (Q_G @ W @ Q_A.mT).to(V.dtype)  # rotate back


def eigenbasis_precondition_triton(V, Q_G, s_G, Q_A, s_A, damping):
    if triton is None:
        raise RuntimeError("eigenbasis_precondition: backend='triton' needs the triton package")
    m, n = V.shape[-2:]
    Vb = V.reshape(-1, m, n)
    B = Vb.shape[0]
    QG, QA, sG, sA = _batch(Q_G, B, 2), _batch(Q_A, B, 2), _batch(s_G, B, 1), _batch(s_A, B, 1)
    prec = precision(V, Q_G, Q_A)
    P = torch.empty(B, m, n, device=V.device, dtype=torch.float32)
    W = torch.empty_like(P)
    U = torch.empty(B, m, n, device=V.device, dtype=V.dtype)
    _matmul(QG.mT, Vb, P, prec)  # P = Q_Gᵀ V
    _matmul(P, QA, W, prec)  # W = Q_Gᵀ V Q_A
    _matmul(QG, W, P, prec, (sG, sA, float(damping)))  # Y = Q_G (W ⊘ (s_G s_Aᵀ + λ)), into P's buffer
    _matmul(P, QA.mT, U, prec)  # U = Y Q_Aᵀ
    return U.reshape(V.shape)


def _batch(t, B, dims):
    # (..., k) or (..., k, k) → a leading batch of B; an operand shared by the batch gets stride 0 (no copy)
    t = t.reshape(-1, *t.shape[t.dim() - dims:])
    return t.expand(B, *t.shape[1:]) if t.shape[0] == 1 else t


def _matmul(A, Bm, C, prec, divide=None):
    # C_b = A_b Bm_b, or A_b (Bm_b ⊘ (s_G s_Aᵀ + λ)) with divide = (s_G, s_A, λ)
    batch, M, K = A.shape
    N = Bm.shape[2]
    sG, sA, lam = divide if divide is not None else (C, C, 1.0)  # unused pointers when not dividing
    grid = lambda meta: (triton.cdiv(M, meta['BLOCK_M']) * triton.cdiv(N, meta['BLOCK_N']), batch)
    args = (A, Bm, C, sG, sA, lam, M, N, K, *A.stride(), *Bm.stride(), *C.stride(),
            sG.stride(0), sA.stride(0), divide is not None, prec)
    launch(_matmul_kernel, _matmul_kernel_tuned, grid, args, dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2))


if triton is not None:

    @triton.jit
    def _matmul_kernel(a_ptr, b_ptr, c_ptr, sg_ptr, sa_ptr, lam, M, N, K,
                       s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn, s_sg, s_sa,
                       DIVIDE: tl.constexpr, PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        # one (BLOCK_M, BLOCK_N) tile of C_b = A_b B_b (A_b: M×K, B_b: K×N), any strides, batch b = program_id(1)
        pid_m, pid_n = tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
        b = tl.program_id(1).to(tl.int64)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        a_ptr += b * s_ab
        b_ptr += b * s_bb
        if DIVIDE:
            s_a = tl.load(sa_ptr + b * s_sa + rn, mask=rn < N, other=0.0).to(tl.float32)  # s_A over this tile's columns
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + rk
            a = tl.load(a_ptr + rm[:, None] * s_am + ks[None, :] * s_ak, mask=(rm[:, None] < M) & (ks[None, :] < K), other=0.0)
            bb = tl.load(b_ptr + ks[:, None] * s_bk + rn[None, :] * s_bn, mask=(ks[:, None] < K) & (rn[None, :] < N), other=0.0)
            bb = bb.to(tl.float32)
            if DIVIDE:
                s_g = tl.load(sg_ptr + b * s_sg + ks, mask=ks < K, other=0.0).to(tl.float32)
                bb = bb / (s_g[:, None] * s_a[None, :] + lam)  # W ⊘ (s_G s_Aᵀ + λ), in registers only
            acc = tl.dot(a.to(tl.float32), bb, acc, input_precision=PREC)  # fp32 accumulation
        c_ptrs = c_ptr + b * s_cb + rm[:, None] * s_cm + rn[None, :] * s_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))

    _matmul_kernel_tuned = triton.autotune(matmul_configs(), key=['M', 'N', 'K'])(_matmul_kernel)
