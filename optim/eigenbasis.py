"""
The Kronecker eigenbasis that Fixed Fisher, EKFAC and KPSVD precondition in, with A = Q_A diag(s_A) Q_A^T and
G = Q_G diag(s_G) Q_G^T the factors' eigendecompositions (optim/capture.py's factors):

    U = Q_G [ (Q_G^T V Q_A) / D ] Q_A^T                     (kernels.eigenbasis_precondition: fused on GPUs)

the exact inverse of (Q_A (x) Q_G) diag(vec D) (Q_A (x) Q_G)^T applied to vec(V). A method's only part is its
denominator D (d_out, d_in [+1]), written next to its math: Fixed Fisher's s_G s_A^T + lambda, KFAC's
(s_G + beta)(s_A + alpha)^T, EKFAC's corrected eigenvalues + lambda.
"""

import torch

from kernels import eigenbasis_precondition
from optim.kronecker import KroneckerOptimizer
from optim.solves import eigen_decompose, qr_refresh


class EigenbasisOptimizer(KroneckerOptimizer):
    """Base of the eigenbasis methods: eigendecompositions of A and G every inv_update_freq steps (eigh in
    eigh_dtype = 'float32' | 'float64', float64 models always in float64; retried by optim/solves.py's robust);
    with eigen_refresh = 'qr' the bases are also refreshed on the factor-update steps in between by one power
    iteration + QR from the previous basis (SOAP's refresh, cheaper than eigh; the eigenvalues are then Rayleigh
    quotients), with 'none' they are not. Then U as in the module docstring, with D = self.denominator(st)."""

    def __init__(self, model, eigen_refresh='none', eigh_dtype='float32', **shared):  # shared: KroneckerOptimizer's
        if eigen_refresh not in ('none', 'qr'):
            hint = " ('eigh' is now 'none')" if eigen_refresh == 'eigh' else ''
            raise ValueError(f"unknown eigen_refresh {eigen_refresh!r}; known: none, qr{hint}")
        if eigh_dtype not in ('float32', 'float64'):
            raise ValueError(f"unknown eigh_dtype {eigh_dtype!r}; known: float32, float64")
        self.eigen_refresh, self.eigh_dtype = eigen_refresh, getattr(torch, eigh_dtype)
        super().__init__(model, **shared)

    def denominator(self, st):
        """D (d_out, d_in [+1]) > 0 from st's eigenvalues and the layer's damping; sets st['damping_eff']."""
        raise NotImplementedError

    def update_decomposition(self, st):
        eigen_decompose(self, st, self.eigh_dtype)

    def refresh_decomposition(self, st):
        if self.eigen_refresh == 'qr':
            for f in 'AG':
                st['s_' + f], st['Q_' + f] = qr_refresh(st[f], st['Q_' + f])

    def precondition(self, st, V):
        return eigenbasis_precondition(V, st['Q_G'], st['Q_A'], self.denominator(st))
