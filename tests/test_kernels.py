"""kernels/: each Triton kernel against its torch reference and a float64 dense computation, on odd sizes.

On CPU the Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1, set below before kernels is imported).
On a GPU machine `TRITON_INTERPRET=0 python -m pytest tests/test_kernels.py` runs the same tests compiled on CUDA.
The interpreter uses 32×32 tiles, so sizes 5 and 17 are one partial tile and 33 and 70 cross tile edges.
"""
import logging
import math
import os
import subprocess
import sys

# triton fixes interpreter-or-GPU for its own and our kernels when they are imported, so this must come first
IMPORTED_TOO_EARLY = 'triton' in sys.modules and os.environ.get('TRITON_INTERPRET', '0') == '0'
os.environ.setdefault('TRITON_INTERPRET', '1')

import pytest
import torch

import kernels
from kernels.eigenbasis import eigenbasis_precondition_ref
from kernels.inverse import damped_inverse_ref, newton_schulz

DEVICE = 'cpu' if kernels._triton.INTERPRET or not torch.cuda.is_available() else 'cuda'
needs_triton = pytest.mark.skipif(
    kernels._triton.triton is None or (DEVICE == 'cpu' and IMPORTED_TOO_EARLY),
    reason="triton is not installed, or was imported before TRITON_INTERPRET=1 was set (set it in the environment)")
BACKENDS = ['torch', pytest.param('triton', marks=needs_triton)]

# relative Frobenius errors against float64
RTOL_FP32 = 1e-5  # one fp32 rounding of well-conditioned inputs and products
RTOL_NS = 2e-4  # Newton–Schulz stops at ‖I - (M+λI)X‖_F ≤ tol = 1e-2, then one more step squares it
RTOL_NS_ILL = 2e-3  # plus the fp32 round-off floor, about 2e-8·cond·√n, at cond(M + λI) = 1e4
RTOL_BF16 = 2e-2  # bf16 keeps 8 bits


def rel(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def spd(n, cond, batch=(), seed=0):
    # Q diag(s) Qᵀ with eigenvalues log-spaced from 1 down to 1/cond, rounded to fp32 so float64 references see the
    # same input as the kernels
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(*batch, n, n, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -math.log10(cond), n, dtype=torch.float64)
    return ((Q * s) @ Q.mT).float().to(DEVICE)


def exact_inverse(M, damping):
    eye = torch.eye(M.shape[-1], dtype=torch.float64, device=M.device)
    lam = torch.as_tensor(damping, dtype=torch.float64, device=M.device)[..., None, None]
    return torch.linalg.inv(M.double() + lam * eye)


# ---------------------------------------------------------------------------------------------- damped_inverse

@needs_triton
@pytest.mark.parametrize('n,batch', [(5, ()), (17, (3,)), (70, ())], ids=['n5', 'n17-b3', 'n70'])
def test_damped_inverse_matches_reference_and_float64(n, batch):
    M = spd(n, 1e2, batch)
    damping = torch.tensor([1e-2, 1e-1, 1.0][:batch[0]]) if batch else 1e-2  # one λ per matrix when batched
    exact = exact_inverse(M, damping)
    X = kernels.damped_inverse(M, damping, backend='triton')
    X_ref = kernels.damped_inverse(M, damping, backend='torch')
    assert X.shape == M.shape and X.dtype == torch.float32
    assert rel(X, exact) < RTOL_NS
    assert rel(X_ref, exact) < RTOL_FP32
    assert rel(X, X_ref) < RTOL_NS


@needs_triton
def test_damped_inverse_ill_conditioned_converges_within_fp32_floor():
    M = spd(33, 1e6)  # cond(M) = 1e6, small damping: cond(M + λI) = 1e4
    X, ok, steps = newton_schulz(M[None].contiguous(), torch.tensor([1e-4], device=DEVICE))
    assert ok.all() and steps <= 30  # log2(c/λ) + a few, no fallback
    assert rel(X[0], exact_inverse(M, 1e-4)) < RTOL_NS_ILL
    assert rel(kernels.damped_inverse(M, 1e-4, backend='torch'), exact_inverse(M, 1e-4)) < RTOL_NS_ILL


@needs_triton
def test_damped_inverse_falls_back_to_cholesky_and_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(sys.modules['kernels.inverse'], '_warned', False)
    M = spd(17, 1e2, (2,))
    with caplog.at_level(logging.DEBUG, logger='nanofisher.kernels'):
        for _ in range(2):
            X = kernels.damped_inverse(M, 1e-2, backend='triton', max_iters=1)  # cannot converge in 1 step
            assert rel(X, exact_inverse(M, 1e-2)) < RTOL_FP32  # float64 Cholesky, rounded to fp32
    levels = [r.levelno for r in caplog.records if 'falling back' in r.message]
    assert levels == [logging.WARNING, logging.DEBUG]


@needs_triton
def test_damped_inverse_falls_back_only_for_matrices_that_do_not_converge(caplog):
    M = torch.stack([spd(17, 1e2), spd(17, 1e6, seed=1)])
    damping = torch.tensor([1e-2, 1e-8])  # the second: cond(M + λI) = 1e6, above what fp32 resolves to tol
    with caplog.at_level(logging.DEBUG, logger='nanofisher.kernels'):
        X = kernels.damped_inverse(M, damping, backend='triton')
    assert any('1 of 2 matrices' in r.message for r in caplog.records)
    assert rel(X[0], exact_inverse(M[0], 1e-2)) < RTOL_NS
    assert rel(X[1], exact_inverse(M[1], 1e-8)) < RTOL_FP32  # float64 Cholesky, rounded to fp32


@needs_triton
def test_damped_inverse_bf16_input_gives_bf16_output():
    M = spd(17, 1e2).bfloat16()
    X = kernels.damped_inverse(M, 1e-2, backend='triton')
    assert X.dtype == torch.bfloat16 and rel(X, exact_inverse(M, 1e-2)) < RTOL_BF16


@pytest.mark.filterwarnings('ignore::RuntimeWarning')  # the interpreter's numpy overflows as Newton–Schulz diverges
@pytest.mark.parametrize('backend', BACKENDS)
def test_damped_inverse_of_indefinite_matrix_is_an_error(backend):
    M = -torch.eye(5, device=DEVICE)
    with pytest.raises(ValueError, match='not positive definite'):
        kernels.damped_inverse(M, 1e-3, backend=backend)


# ---------------------------------------------------------------------------------------------- eigenbasis

def eigen_problem(m, n, batch=(), batched_q=False, cond=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    qb = batch if batched_q else ()
    Q_G = torch.linalg.qr(torch.randn(*qb, m, m, generator=g, dtype=torch.float64))[0]
    Q_A = torch.linalg.qr(torch.randn(*qb, n, n, generator=g, dtype=torch.float64))[0]
    s_G = torch.logspace(0, -math.log10(cond), m, dtype=torch.float64).expand(*qb, m)
    s_A = torch.logspace(0, -math.log10(cond), n, dtype=torch.float64).expand(*qb, n)
    V = torch.randn(*batch, m, n, generator=g, dtype=torch.float64)
    return [t.to(DEVICE) for t in (V, Q_G, s_G, Q_A, s_A)]


def fixed_fisher_args(V, Q_G, s_G, Q_A, s_A, damping, dtype=torch.float32):
    # (V, Q_G, Q_A, D) with Fixed Fisher's denominator D = s_G s_Aᵀ + λ, each rounded to dtype
    D = s_G[..., :, None] * s_A[..., None, :] + damping
    return [t.to(dtype) for t in (V, Q_G, Q_A, D)]


def kronecker_solve(V, Q_G, s_G, Q_A, s_A, damping):
    # dense float64: A ⊗ G + λI applied to column-major vec(V), solved directly
    G, A = (Q_G * s_G) @ Q_G.T, (Q_A * s_A) @ Q_A.T
    m, n = V.shape
    K = torch.kron(A, G) + damping * torch.eye(m * n, dtype=torch.float64, device=V.device)
    return torch.linalg.solve(K, V.T.reshape(-1)).reshape(n, m).T


@needs_triton
@pytest.mark.parametrize('m,n,batch,batched_q', [(5, 17, (), False), (17, 33, (2,), False), (33, 17, (3,), True)],
                         ids=['5x17', '17x33-b2-sharedQ', '33x17-b3-batchedQ'])
def test_eigenbasis_matches_reference_and_dense_float64(m, n, batch, batched_q):
    args = eigen_problem(m, n, batch, batched_q)
    V, Q_G, s_G, Q_A, s_A = args
    U = kernels.eigenbasis_precondition(*fixed_fisher_args(*args, 1e-2), backend='triton')
    U_ref = kernels.eigenbasis_precondition(*fixed_fisher_args(*args, 1e-2), backend='torch')
    Vs = V.reshape(-1, m, n)
    qs = lambda t: t.reshape(-1, *t.shape[len(batch):]) if batched_q else t.expand(len(Vs), *t.shape)
    exact = torch.stack([kronecker_solve(*a, 1e-2) for a in zip(Vs, qs(Q_G), qs(s_G), qs(Q_A), qs(s_A))])
    exact = exact.reshape(V.shape)
    assert U.shape == V.shape and U.dtype == torch.float32
    assert rel(U, exact) < RTOL_FP32 and rel(U_ref, exact) < RTOL_FP32 and rel(U, U_ref) < RTOL_FP32


@needs_triton
def test_eigenbasis_ill_conditioned_and_multi_tile():
    args = fixed_fisher_args(*eigen_problem(70, 33, cond=1e6), 1e-6)  # D spans 1e-12 + 1e-6 .. 1
    exact = eigenbasis_precondition_ref(*[t.double() for t in args])  # same rounded inputs, in fp64
    U = kernels.eigenbasis_precondition(*args, backend='triton')
    U_ref = kernels.eigenbasis_precondition(*args, backend='torch')
    assert rel(U, exact) < RTOL_FP32 and rel(U_ref, exact) < RTOL_FP32


@needs_triton
def test_eigenbasis_bf16_gradient_gives_bf16_output():
    V, Q_G, Q_A, D = fixed_fisher_args(*eigen_problem(17, 33), 1e-2, torch.float64)
    U = kernels.eigenbasis_precondition(V.bfloat16(), Q_G.float(), Q_A.float(), D.float(), backend='triton')
    exact = eigenbasis_precondition_ref(V.bfloat16().double(), Q_G, Q_A, D)
    assert U.dtype == torch.bfloat16 and rel(U, exact) < RTOL_BF16


@needs_triton
def test_eigenbasis_full_denominator_and_non_orthogonal_bases():
    # a denominator that is no rank-one + λ (EKFAC's) and bases that are not orthogonal (KFAC-corrected's P)
    g = torch.Generator().manual_seed(3)
    V, P_G, P_A = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((33, 17), (33, 33), (17, 17)))
    D = torch.rand(33, 17, generator=g, dtype=torch.float64) + 0.1
    V, P_G, P_A, D = (t.float().double() for t in (V, P_G, P_A, D))  # the fp32 inputs, exactly, in fp64
    exact = P_G @ ((P_G.T @ V @ P_A) / D) @ P_A.T
    U = kernels.eigenbasis_precondition(*[t.float().to(DEVICE) for t in (V, P_G, P_A, D)], backend='triton')
    assert rel(U, exact) < 10 * RTOL_FP32  # products of unnormalised random matrices: a few fp32 roundings more


# ---------------------------------------------------------------------------------------------- dispatch and errors

def test_default_backend_on_cpu_is_the_torch_reference():
    M = spd(5, 10).float().cpu()
    assert torch.equal(kernels.damped_inverse(M, 0.1), damped_inverse_ref(M, 0.1))
    args = [t.cpu() for t in fixed_fisher_args(*eigen_problem(5, 7), 0.1)]
    assert torch.equal(kernels.eigenbasis_precondition(*args), eigenbasis_precondition_ref(*args))


@needs_triton
def test_triton_on_cpu_without_the_interpreter_is_an_error(monkeypatch):
    monkeypatch.setattr(kernels._triton, 'INTERPRET', False)
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        kernels.damped_inverse(torch.eye(5), 0.1, backend='triton')


def test_kernels_import_and_torch_path_work_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, kernels\n"
            "assert kernels._triton.triton is None\n"
            "X = kernels.damped_inverse(torch.eye(3), 1.0)\n"
            "assert torch.allclose(X, torch.eye(3) / 2)\n"
            "try:\n"
            "    kernels.damped_inverse(torch.eye(3), 1.0, backend='triton')\n"
            "except RuntimeError as e:\n"
            "    assert 'needs the triton package' in str(e)\n"
            "else:\n"
            "    raise AssertionError('no error')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, 'TRITON_INTERPRET': '0', 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, '-c', code], cwd=root, env=env, check=True, timeout=120)


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels.inverse import _ns_kernel
from kernels.eigenbasis import _matmul_kernel

def compile(fn, sig, consts):
    sig = {**sig, **{k: 'constexpr' for k in consts}}
    triton.compile(ASTSource(fn, sig, constexprs=consts), target=GPUTarget('cuda', 90, 32), options={'num_warps': 4})

i32, f32, p32, p16 = 'i32', 'fp32', '*fp32', '*bf16'
tile = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, GROUP_M=8)
compile(_ns_kernel, dict(a_ptr=p32, b_ptr=p32, d_ptr=p32, c_ptr=p32, lam_ptr=p32, nrm_ptr=p32, n=i32, alpha=f32,
        beta=f32, delta=f32, gamma=f32), dict(NORM=True, PREC='tf32x3', **tile))
compile(_matmul_kernel, dict(a_ptr=p32, b_ptr=p32, c_ptr=p16, d_ptr=p32, M=i32, N=i32, K=i32,
        **{s: i32 for s in 's_ab s_am s_ak s_bb s_bk s_bn s_cb s_cm s_cn s_db s_dk s_dn'.split()}),
        dict(DIVIDE=True, PREC='tf32', **tile))
"""


@needs_triton
def test_kernels_compile_for_an_h100_without_a_gpu():
    # the interpreter skips Triton's compiler, so GPU-only errors (types, layouts, shared memory) show up here
    pytest.importorskip('triton.backends.nvidia')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, 'TRITON_INTERPRET': '0', 'OMP_NUM_THREADS': '1'}
    subprocess.run([sys.executable, '-c', COMPILE_FOR_H100], cwd=root, env=env, check=True, timeout=300)


E, V5, Q5, Q5A, D5 = torch.eye(4), torch.ones(4, 5), torch.eye(4), torch.eye(5), torch.ones(4, 5)
BAD_INPUTS = [
    pytest.param(lambda: kernels.damped_inverse(torch.ones(4), 0.1), 'square', id='inverse-1d'),
    pytest.param(lambda: kernels.damped_inverse(torch.ones(3, 4), 0.1), 'square', id='inverse-non-square'),
    pytest.param(lambda: kernels.damped_inverse(E, 0.0), 'damping', id='inverse-zero-damping'),
    pytest.param(lambda: kernels.damped_inverse(E, -1.0), 'damping', id='inverse-negative-damping'),
    pytest.param(lambda: kernels.damped_inverse(E, float('nan')), 'damping', id='inverse-nan-damping'),
    pytest.param(lambda: kernels.damped_inverse(E.expand(2, 4, 4), torch.ones(3)), 'batch shape', id='inverse-damping-shape'),
    pytest.param(lambda: kernels.damped_inverse(E * float('nan'), 0.1), 'NaN', id='inverse-nan'),
    pytest.param(lambda: kernels.damped_inverse(E + torch.eye(4).roll(1, 0), 0.1), 'symmetric', id='inverse-asymmetric'),
    pytest.param(lambda: kernels.damped_inverse(E, 0.1, tol=0.0), 'tol', id='inverse-tol'),
    pytest.param(lambda: kernels.damped_inverse(E, 0.1, backend='cuda'), 'unknown backend', id='inverse-backend'),
    pytest.param(lambda: kernels.damped_inverse(E.double(), 0.1, backend='triton'), 'float64', id='inverse-fp64-triton',
                 marks=needs_triton),
    pytest.param(lambda: kernels.eigenbasis_precondition(torch.ones(5), Q5, Q5A, D5), 'V', id='eigen-1d'),
    pytest.param(lambda: kernels.eigenbasis_precondition(V5, Q5A, Q5A, D5), 'Q_G', id='eigen-QG-shape'),
    pytest.param(lambda: kernels.eigenbasis_precondition(V5, Q5, Q5A, D5.T), 'D must be', id='eigen-D-shape'),
    pytest.param(lambda: kernels.eigenbasis_precondition(V5, Q5, Q5A, D5 - 1), 'D must be > 0', id='eigen-zero-D'),
    pytest.param(lambda: kernels.eigenbasis_precondition(V5, Q5, Q5A, -D5), 'D must be > 0', id='eigen-negative-D'),
    pytest.param(lambda: kernels.eigenbasis_precondition(V5 / 0, Q5, Q5A, D5), 'V has NaN/Inf', id='eigen-inf'),
    pytest.param(lambda: kernels.eigenbasis_precondition(V5, Q5, Q5A, D5, backend='gpu'), 'unknown backend',
                 id='eigen-backend'),
]


@pytest.mark.parametrize('call,match', BAD_INPUTS)
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
