"""
The eigenbasis solve of every eigenbasis method, A = Q_A diag(s_A) Q_Aᵀ, G = Q_G diag(s_G) Q_Gᵀ:
    U = Q_G [(Q_Gᵀ V Q_A) ⊘ D] Q_Aᵀ
with the method's denominator D (d_out, d_in): Fixed Fisher's s_G s_Aᵀ + λ gives (A ⊗ G + λI)⁻¹ vec(V), EKFAC's
corrected eigenvalues + λ its own. V is the (d_out, d_in) gradient (or a batch (..., d_out, d_in)); Q_G (d_out, d_out),
Q_A (d_in, d_in), D (d_out, d_in), either shared by the batch or batched like V.

Triton path: four launches of one tiled matmul kernel, fp32 accumulation and fp32 intermediates,
    P = Q_Gᵀ V,   W = P Q_A,   Y = Q_G (W ⊘ D),   U = Y Q_Aᵀ
The division is done on each tile of W as the third launch loads it (with the same tile of D), so the rotated,
divided gradient lives only in registers between the division and the second rotation (no round trip to global
memory). Transposes are strides, never copies.

Reference path: the same formula with unfused torch matmuls, in fp32.
"""
import torch

from kernels._triton import triton, tl, launch, precision, tile_ids, matmul_configs


def eigenbasis_precondition_ref(V, Q_G, Q_A, D):
    f = torch.float64 if V.dtype == torch.float64 else torch.float32
    Q_G, Q_A, D = Q_G.to(f), Q_A.to(f), D.to(f)
    W = Q_G.mT @ V.to(f) @ Q_A  # rotate into the eigenbasis
    return (Q_G @ (W / D) @ Q_A.mT).to(V.dtype)  # divide by the denominator, rotate back


def eigenbasis_precondition_triton(V, Q_G, Q_A, D):
    if triton is None:
        raise RuntimeError("eigenbasis_precondition: backend='triton' needs the triton package")
    m, n = V.shape[-2:]
    Vb = V.reshape(-1, m, n)
    B = Vb.shape[0]
    QG, QA, Db = _batch(Q_G, B), _batch(Q_A, B), _batch(D, B)
    prec = precision(V, Q_G, Q_A)
    P = torch.empty(B, m, n, device=V.device, dtype=torch.float32)
    W = torch.empty_like(P)
    U = torch.empty(B, m, n, device=V.device, dtype=V.dtype)
    _matmul(QG.mT, Vb, P, prec)  # P = Q_Gᵀ V
    _matmul(P, QA, W, prec)  # W = Q_Gᵀ V Q_A
    _matmul(QG, W, P, prec, Db)  # Y = Q_G (W ⊘ D), into P's buffer
    _matmul(P, QA.mT, U, prec)  # U = Y Q_Aᵀ
    return U.reshape(V.shape)


def _batch(t, B):
    # (..., k, k') → a leading batch of B; an operand shared by the batch gets stride 0 (no copy)
    t = t.reshape(-1, *t.shape[-2:])
    return t.expand(B, *t.shape[1:]) if t.shape[0] == 1 else t


def _matmul(A, Bm, C, prec, divide=None):
    # C_b = A_b Bm_b, or A_b (Bm_b ⊘ D_b) with divide = D (batch, K, N)
    batch, M, K = A.shape
    N = Bm.shape[2]
    D = divide if divide is not None else C  # an unused pointer when not dividing
    grid = lambda meta: (triton.cdiv(M, meta['BLOCK_M']) * triton.cdiv(N, meta['BLOCK_N']), batch)
    args = (A, Bm, C, D, M, N, K, *A.stride(), *Bm.stride(), *C.stride(), *D.stride(), divide is not None, prec)
    launch(_matmul_kernel, _matmul_kernel_tuned, grid, args, dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=2))


if triton is not None:

    @triton.jit
    def _matmul_kernel(a_ptr, b_ptr, c_ptr, d_ptr, M, N, K,
                       s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn, s_db, s_dk, s_dn,
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
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + rk
            a = tl.load(a_ptr + rm[:, None] * s_am + ks[None, :] * s_ak, mask=(rm[:, None] < M) & (ks[None, :] < K), other=0.0)
            bb = tl.load(b_ptr + ks[:, None] * s_bk + rn[None, :] * s_bn, mask=(ks[:, None] < K) & (rn[None, :] < N), other=0.0)
            bb = bb.to(tl.float32)
            if DIVIDE:  # W ⊘ D, in registers only (1 where masked: no 0/0)
                d = tl.load(d_ptr + b * s_db + ks[:, None] * s_dk + rn[None, :] * s_dn,
                            mask=(ks[:, None] < K) & (rn[None, :] < N), other=1.0)
                bb = bb / d.to(tl.float32)
            acc = tl.dot(a.to(tl.float32), bb, acc, input_precision=PREC)  # fp32 accumulation
        c_ptrs = c_ptr + b * s_cb + rm[:, None] * s_cm + rn[None, :] * s_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))

    _matmul_kernel_tuned = triton.autotune(matmul_configs(), key=['M', 'N', 'K'])(_matmul_kernel)
