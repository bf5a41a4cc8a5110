"""
Triton kernels vs their torch references, per kernel and factor size; prints a markdown table.

    python -m benchmarks.kernels                          # GPU: sizes 768,1024,2048,3072
    python -m benchmarks.kernels --sizes 64,4096 --dtype bf16 --batch 4

torch references: Cholesky (cholesky_ex + cholesky_inverse) and eigh for damped_inverse, unfused fp32 matmuls for
eigenbasis_precondition. Both columns go through the public functions, input
checks included. speedup = torch ms / triton ms.
On a CPU only the torch references are timed (Triton needs a GPU for speed figures); the Triton path is then run
once in the interpreter on a tiny size to show it works, which is not a speed figure.
"""
import argparse
import os
import subprocess
import sys
import time

import torch

import kernels
from kernels.inverse import newton_schulz


def timeit(fn, cuda, reps=5):
    # ms per call: triton's do_bench on a GPU (warmup, L2 flush, median), best of a few wall-clock runs on a CPU
    if cuda:
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode='median')
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def spd(n, batch, device, seed=0):
    # a factor-like matrix: eigenvalues log-spaced from 1 down to 1e-6, random eigenbasis
    g = torch.Generator(device=device).manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(batch, n, n, generator=g, device=device))[0]
    s = torch.logspace(0, -6, n, device=device)
    return (Q * s) @ Q.mT


def rel(x, ref):
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


def cases(n, batch, dtype, device):
    # (kernel, triton fn, torch fn, notes fn or None) for one factor size n
    lam = 1e-3  # cond(M + λI) ≈ 1e3, a typical damped KFAC factor
    lams = torch.full((batch,), lam, device=device)
    M = spd(n, batch, device)

    def eigh_inverse():  # Q diag(1/(s + λ)) Qᵀ
        s, Q = torch.linalg.eigh(M)
        return (Q / (s[..., None, :] + lam)) @ Q.mT

    def inverse_notes():
        X, ok, steps = newton_schulz(M.contiguous(), lams)
        err = rel(X, kernels.damped_inverse(M, lam, backend='torch'))
        return f"Newton–Schulz steps {steps}; fallbacks {int((~ok).sum())}; rel diff vs Cholesky {err:.1e}"

    newton = lambda: kernels.damped_inverse(M, lam, backend='triton')
    cholesky = lambda: kernels.damped_inverse(M, lam, backend='torch')
    yield 'damped_inverse vs Cholesky', newton, cholesky, inverse_notes
    yield 'damped_inverse vs eigh', newton, eigh_inverse, None

    Q = torch.linalg.qr(torch.randn(n, n, device=device))[0]
    s = torch.rand(n, device=device)
    eig = (torch.randn(batch, n, n, device=device, dtype=dtype), Q, Q, torch.outer(s, s) + lam)
    tri = lambda: kernels.eigenbasis_precondition(*eig, backend='triton')
    ref = lambda: kernels.eigenbasis_precondition(*eig, backend='torch')
    yield 'eigenbasis_precondition', tri, ref, lambda: f"rel diff vs torch {rel(tri(), ref()):.1e}"


def interpreter_check():
    # the Triton path on CPU, in the interpreter, on a size that crosses tile edges: correctness only
    assert kernels._triton.INTERPRET
    n, lam = 33, 1e-3
    M = spd(n, 2, 'cpu')
    X = kernels.damped_inverse(M, lam, backend='triton')
    print(f"interpreter check (not a speed figure): damped_inverse 2x{n}x{n} rel diff vs Cholesky "
          f"{rel(X, kernels.damped_inverse(M, lam, backend='torch')):.1e}")
    Q, s, V = torch.linalg.qr(torch.randn(n, n))[0], torch.rand(n), torch.randn(n, n)
    D = torch.outer(s, s) + lam
    U = kernels.eigenbasis_precondition(V, Q, Q, D, backend='triton')
    print(f"interpreter check (not a speed figure): eigenbasis_precondition {n}x{n} rel diff vs torch "
          f"{rel(U, kernels.eigenbasis_precondition(V, Q, Q, D, backend='torch')):.1e}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', default=None, help="factor sizes, comma-separated (GPU 768,1024,2048,3072; CPU 256,768)")
    p.add_argument('--batch', type=int, default=1, help="matrices per call")
    p.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16'], help="dtype of V (factors stay fp32)")
    p.add_argument('--interpreter-check', action='store_true', help="only run the CPU interpreter check")
    args = p.parse_args()
    if args.interpreter_check:
        return interpreter_check()
    cuda = torch.cuda.is_available()
    device = 'cuda' if cuda else 'cpu'
    sizes = [int(s) for s in (args.sizes or ('768,1024,2048,3072' if cuda else '256,768')).split(',')]
    dtype = dict(fp32=torch.float32, bf16=torch.bfloat16)[args.dtype]
    torch.manual_seed(0)
    triton = kernels._triton.triton
    where = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    version = triton.__version__ if triton is not None else 'not installed'
    print(f"{where}, torch {torch.__version__}, triton {version}, batch {args.batch}, {args.dtype}\n")
    print("| kernel | n | triton ms | torch ms | speedup | notes |\n| --- | ---: | ---: | ---: | ---: | --- |")
    for n in sizes:
        timed = set()
        for name, tri, ref, notes in cases(n, args.batch, dtype, device):
            if not cuda and ref in timed:
                continue  # without Triton timings a repeated torch reference says nothing new
            timed.add(ref)
            t_ref = timeit(ref, cuda)
            if cuda and triton is not None:
                t_tri = timeit(tri, cuda)
                tri_ms, speed = f"{t_tri:.3f}", f"{t_ref / t_tri:.2f}x"
            else:
                tri_ms, speed = "–", "needs a GPU"
            note = notes() if notes is not None and cuda and triton is not None else ""
            print(f"| {name} | {n} | {tri_ms} | {t_ref:.3f} | {speed} | {note} |", flush=True)
    if not cuda and triton is not None:
        print("\nTriton timings need a GPU; the Triton path on this CPU runs only in the interpreter:")
        if kernels._triton.INTERPRET:
            interpreter_check()
        else:  # the kernels were built for a GPU at import: rerun with the interpreter on
            env = {**os.environ, 'TRITON_INTERPRET': '1'}
            subprocess.run([sys.executable, '-m', 'benchmarks.kernels', '--interpreter-check'], env=env, check=True)


if __name__ == '__main__':
    main()
