"""
iEF, the improved empirical Fisher (Wu, Yu, Zhang & Woodland, 2024, "An Improved Empirical Fisher Approximation for
Natural Gradient Descent", NeurIPS), solved exactly on the preconditioned layers; and iEKFAC, KFAC whose G takes
iEF's rescaling of each sample's gradient.
"""

from functools import partial

import torch
import torch.nn as nn

from optim.distributed import all_gather_rows
from optim.kfac import KFAC
from optim.capture import unwrap
from optim.kronecker import KroneckerOptimizer
from optim.rows import keep_rows


class LogitsGrad:
    """s_m = ||dl_m/dz_m||^2 for each token m of the logits z (||p_m - e_(y_m)||^2 for softmax cross-entropy), from a
    tensor hook on the output of the module that produces them, and T, the tokens per sample (z (B, T, C): T;
    z (N, C): 1). It records when and as capture (a FactorCapture) does: its scaling dl_m/dz_m = (M/loss_scale) grad,
    train mode with grad enabled on armed steps, and only while capture.record_grads."""

    def __init__(self, module, capture):
        self.capture, self.s, self.lengths, self.taken = capture, [], [], None
        self.handle = module.register_forward_hook(self._forward_hook)

    @torch.compiler.disable
    def _forward_hook(self, module, inputs, output):
        if not (module.training and torch.is_grad_enabled() and self.capture.armed):
            return
        T = output[0].numel() // output.shape[-1] if output.dim() > 2 else 1
        base = output._base  # as in FactorCapture: the hooks of a view may be dropped
        (base if base is not None and base.numel() == output.numel() else output).register_hook(
            partial(self._grad_hook, T))

    def _grad_hook(self, T, grad):
        if self.capture.record_grads:
            dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
            norm = torch.linalg.vector_norm(grad.detach().reshape(-1, grad.shape[-1]), dim=1, dtype=dtype)  # (M,)
            self.s.append((norm * (norm.shape[0] / self.capture.loss_scale)).square())
            self.lengths.append(T)

    def take(self):
        """(s (M,), T) of the tokens recorded since the last clear(), in forward order; under DDP every rank's, in
        rank order, as FactorCapture gathers the rows (the same on every rank; one all-gather until clear())."""
        if self.taken is None:
            if len(set(self.lengths)) != 1:
                raise RuntimeError(f"iEF: the logits of this step came in {len(self.lengths)} passes with tokens per "
                                   f"sample {sorted(set(self.lengths))}; it needs one length")
            self.taken = all_gather_rows(torch.cat(self.s)), self.lengths[0]
        return self.taken

    def clear(self):
        self.s, self.lengths, self.taken = [], [], None


def logits_module(model, name):
    """The module named name; by default 'lm_head' if there is one, else the model's last nn.Linear."""
    modules = dict(unwrap(model).named_modules())
    if not name:
        name = 'lm_head' if 'lm_head' in modules else [n for n, m in modules.items() if isinstance(m, nn.Linear)][-1]
    if name not in modules:
        raise ValueError(f"logits_module {name!r} names no module of the model")
    return modules[name]


def gram(a, g, T):
    """(J J^T)_nm = <J_n, J_m> for the per-sample gradients J_n = sum_(t in n) g_t a_t^T of one layer, sample n being
    T consecutive tokens of a (M, d_a), g (M, d_g). Whichever exact form costs less: the token Grams
    (g g^T) * (a a^T) summed over each pair of samples' T x T blocks, M^2 (d_a + d_g), or the N per-sample
    gradients of this layer, (M + N^2) d_a d_g."""
    M, da, dg = a.shape[0], a.shape[1], g.shape[1]
    N = M // T
    if (M + N * N) * da * dg >= M * M * (da + dg):
        return ((g @ g.T) * (a @ a.T)).view(N, T, N, T).sum((1, 3))
    J = torch.einsum('ntg,nta->nga', g.view(N, T, dg), a.view(N, T, da)).reshape(N, dg * da)
    return J @ J.T


def squared_norms(x):
    """sum_m ||x_m||^2: iEF keeps no Kronecker factor, so factors() are mean squared norms of a and g_hat."""
    return x.square().sum()


class LogitsMixin:
    """A LogitsGrad on the model's logits, emptied when a step ends, on zero_grad() and removed with the optimizer."""

    def hook_logits(self, model, name):
        self.logits = LogitsGrad(logits_module(model, name), self.capture)

    @torch.no_grad()
    def step(self, closure=None):
        try:
            return super().step(closure)
        finally:
            self.logits.clear()

    def zero_grad(self, set_to_none=True):
        super().zero_grad(set_to_none=set_to_none)
        self.logits.clear()

    def __del__(self):
        if getattr(self, 'logits', None) is not None:
            self.logits.handle.remove()
        super().__del__()


class IEF(LogitsMixin, KroneckerOptimizer):
    """iEF: with J (N, P) the per-sample gradients of the summed loss on the preconditioned layers' parameters and
    s_n = ||grad_(z_n) l_n||^2 (for softmax cross-entropy sum_(t in n) ||p_t - e_(y_t)||^2), every step

        Delta = J^T (J J^T + lambda I)^-1 s,    W <- W - lr Delta        (Delta's block of a layer is U)

    so that, to first order and for small lambda, each sample's loss falls by lr s_n: by more where the model is
    further from the sample's label (the empirical Fisher's J^T (J J^T + lambda I)^-1 1 lowers every one by lr).
    J J^T = sum_layers gram(a, g) comes from the captured per-token rows, never from all layers' per-sample
    gradients at once, and is solved in float64; a layer's block is U = sum_n c_n J_n = g^T diag(c) a, with
    c = (J J^T + lambda I)^-1 s repeated over each sample's tokens. The gradient V is not used. Then grafting, KL
    clipping, momentum and weight decay as in KroneckerOptimizer.

    Hyperparameters: those of KroneckerOptimizer (optim/kronecker.py), same defaults (damping_mode='relative' takes
    lambda = damping tr(J J^T)/N), and samples='sequences' (the paper's choice: a sample is one of the B sequences
    of the logits (B, T, C), its loss summed over the T tokens) | 'tokens' (each token a sample, its gradient taken
    as g_t a_t^T, the expand setting), logits_module='' (the module that outputs the logits: lm_head if there is
    one, else the last nn.Linear). factor_update_freq is always 1 (iEF needs each step's per-sample gradients);
    factor_decay and inv_update_freq have nothing to act on; fisher must be 'empirical'.

    Caveats:
    - Keeps each step's per-token rows of every preconditioned layer (optim/rows.py); the token-Gram form costs
      M^2 memory per layer, the per-sample form N d_in d_out: M and N stay small (the paper: small batches).
    - 'tokens' in a transformer is an approximation: a token's gradient also flows through attention.
    - Other parameters (embeddings, norms, the tied head) are stepped by AdamW as usual, outside the iEF solve.
    - Under DDP every step all-gathers every layer's rows (M (d_in + d_out) numbers a layer, optim/distributed.py)
      to solve for the global batch; ranks must hold equal micro-batches.
    """

    statistic = staticmethod(squared_norms)

    def __init__(self, model, lr=1e-3, weight_decay=0.1, momentum=0.9, damping=1e-3, damping_mode='absolute',
                 factor_decay=0.95, factor_update_freq=1, inv_update_freq=100, kl_clip=1e-3, fisher='empirical',
                 exclude='', max_factor_dim=8192, grafting='none', beta1=0.9, beta2=0.95, eps=1e-8,
                 adamw_lr_scale=1.0, damping_schedule='constant', damping_update_freq=5,
                 samples='sequences', logits_module=''):
        if fisher != 'empirical':
            raise ValueError(f"iEF is built on the training labels' per-sample gradients: fisher must be 'empirical', "
                             f"got {fisher!r}")
        if samples not in ('sequences', 'tokens'):
            raise ValueError(f"unknown samples {samples!r}; known: sequences, tokens")
        if factor_update_freq != 1:
            print(f"IEF: factor_update_freq={factor_update_freq} ignored: iEF needs every step's per-sample gradients")
        self.samples, self._solved_at = samples, -1
        super().__init__(model, lr=lr, weight_decay=weight_decay, momentum=momentum, damping=damping,
                         damping_mode=damping_mode, factor_decay=factor_decay, factor_update_freq=1,
                         inv_update_freq=inv_update_freq, kl_clip=kl_clip, fisher=fisher, exclude=exclude,
                         max_factor_dim=max_factor_dim, grafting=grafting, beta1=beta1, beta2=beta2, eps=eps,
                         adamw_lr_scale=adamw_lr_scale,
                         damping_schedule=damping_schedule, damping_update_freq=damping_update_freq)
        keep_rows(self)
        self.hook_logits(model, logits_module)

    def solve(self):
        """Each layer's U for this step, from the rows of all of them: one N x N solve (under DDP the rows of every
        rank, which FactorCapture gathers: every rank solves for the global batch)."""
        s, T = self.logits.take()
        T = 1 if self.samples == 'tokens' else T
        for st in self.layer_state.values():
            st.pop('U', None)  # a layer that had rows but no gradient last step
        layers = [st for st in self.layer_state.values() if 'rows' in st]
        if any(st['rows'][0].shape[0] != s.shape[0] for st in layers) or s.shape[0] % T:
            raise RuntimeError(f"iEF: {s.shape[0]} tokens of logits in samples of {T}, but the layers saw "
                               f"{sorted({st['rows'][0].shape[0] for st in layers})}")
        s = s.view(-1, T).sum(1).double()  # (N,) ||grad_(z_n) l_n||^2 of each sample
        K = sum(gram(*st['rows'], T).double() for st in layers)  # (N, N) J J^T
        lam = self.damping_for(K.diagonal().mean(), 1.0)
        eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        c = self.robust(lambda K, lam: torch.cholesky_solve(s[:, None], torch.linalg.cholesky(K + lam * eye)),
                        K, float(lam), 'Cholesky of J J^T')[:, 0]
        for st in layers:
            a, g = st['rows']
            st['U'] = (g * c.repeat_interleave(T).to(g.dtype)[:, None]).T @ a  # (d_out, d_in [+1])
            st['damping_eff'] = torch.as_tensor(lam, dtype=a.dtype)
        self._solved_at = self.steps

    def precondition(self, st, V):
        if self._solved_at != self.steps:
            self.solve()
        return st.pop('U')


def iekfac_factors(st, A, G, logits):
    """RowCapture's reduce for iEKFAC: G from the step's g_m / ||grad_(z_m) l_m||."""
    a, g = st['rows']
    s, _ = logits.take()
    if s.shape[0] != g.shape[0]:
        raise RuntimeError(f"iEKFAC: {s.shape[0]} tokens of logits, but the layer saw {g.shape[0]}")
    g = g * s.clamp_min(1e-30).rsqrt().to(g.dtype)[:, None]
    return A, g.T @ g / g.shape[0]


class IEKFAC(LogitsMixin, KFAC):
    """iEKFAC: KFAC (optim/kfac.py) on G_iEF = (1/M) sum_m g_m g_m^T / ||grad_(z_m) l_m||^2, each token's output
    gradient rescaled by its logits' gradient norm (p_m - e_(y_m) for softmax cross-entropy): iEF's remedy for the
    empirical Fisher's inverse scaling carried into a Kronecker factor (Wu et al., 2024, expect approximate natural
    gradient methods to gain from iEF; this is one way, not the paper's):

        U = (G_iEF + (sqrt(lambda)/pi) I)^-1 V (A + pi sqrt(lambda) I)^-1

    Hyperparameters: those of KFAC, same defaults, and logits_module='' (as in IEF).

    Caveats:
    - Samples are tokens here (KFAC's samples); a token with logits gradient ~0 has g ~ 0 too and adds ~nothing.
    - G_iEF is on another scale than KFAC's G (each g_m divided by ||p_m - e_(y_m)|| <= sqrt(2), up to 10^3 times
      on well-fit tokens): the same lr and damping act differently than in KFAC.
    - Keeps the step's per-token rows a, g (M (d_in + d_out) numbers a layer) until the step ends (optim/rows.py).
    - fisher='sampled' rescales by the sampled labels' logits gradient, as it takes G from their backward.
    """

    def __init__(self, model, lr=1e-3, weight_decay=0.1, momentum=0.9, damping=1e-3, damping_mode='absolute',
                 factor_decay=0.95, factor_update_freq=10, inv_update_freq=100, kl_clip=1e-3, fisher='empirical',
                 exclude='', max_factor_dim=8192, grafting='none', beta1=0.9, beta2=0.95, eps=1e-8,
                 adamw_lr_scale=1.0, damping_schedule='constant', damping_update_freq=5,
                 logits_module=''):
        super().__init__(model, lr=lr, weight_decay=weight_decay, momentum=momentum, damping=damping,
                         damping_mode=damping_mode, factor_decay=factor_decay, factor_update_freq=factor_update_freq,
                         inv_update_freq=inv_update_freq, kl_clip=kl_clip, fisher=fisher, exclude=exclude,
                         max_factor_dim=max_factor_dim, grafting=grafting, beta1=beta1, beta2=beta2, eps=eps,
                         adamw_lr_scale=adamw_lr_scale,
                         damping_schedule=damping_schedule, damping_update_freq=damping_update_freq)
        keep_rows(self)  # the capture's hooks first, the logits' after: take() reads both
        self.hook_logits(model, logits_module)
        self.capture.reduce = partial(iekfac_factors, logits=self.logits)
