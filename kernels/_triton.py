"""
The one place that imports triton, so that `import kernels` works where triton is missing (the torch references
still run). Triton decides at @triton.jit time whether a kernel is compiled for the GPU or run by the interpreter,
so TRITON_INTERPRET=1 must be set before `kernels` is imported; INTERPRET records what the kernels were built for.
"""
import os

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the *_ref paths still work
    triton = tl = None

INTERPRET = os.environ.get('TRITON_INTERPRET', '0').lower() in ('1', 'true', 'yes', 'on')


def launch(kernel, tuned, grid, args, interpret_meta):
    """Autotuned launch on a GPU; in the interpreter one fixed small tile (timing configs there means nothing)."""
    if INTERPRET:
        return kernel[grid](*args, **interpret_meta)
    return tuned[grid](*args)


def precision(*tensors):
    """tl.dot input precision: tf32x3 (about fp32 accuracy on tensor cores) when every input is fp32, else tf32,
    which holds bf16/fp16 inputs exactly. The interpreter ignores it and multiplies in fp32."""
    import torch
    return 'tf32x3' if all(t.dtype == torch.float32 for t in tensors) else 'tf32'


if triton is not None:

    @triton.jit
    def tile_ids(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
        # grouped order: GROUP_M row blocks sweep the columns together, so their tiles of A stay in L2
        n_m = tl.cdiv(M, BLOCK_M)
        n_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * n_n
        first_m = (pid // per_group) * GROUP_M
        rows = tl.minimum(n_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % rows
        pid_n = (pid % per_group) // rows
        return pid_m, pid_n

    def matmul_configs():
        # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages): small tiles keep 64..256 factors busy, big ones feed 2048..4096
        shapes = [(32, 32, 32, 2, 2), (64, 64, 32, 4, 3), (64, 128, 32, 4, 3), (128, 64, 32, 4, 3),
                  (128, 128, 32, 8, 3), (128, 128, 64, 8, 2)]
        return [triton.Config({'BLOCK_M': m, 'BLOCK_N': n, 'BLOCK_K': k, 'GROUP_M': 8}, num_warps=w, num_stages=s)
                for m, n, k, w, s in shapes]
else:
    tile_ids = matmul_configs = None  # the kernel files import these names either way
