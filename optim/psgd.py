"""
PSGD-Kron (Li, 2018, "Preconditioned Stochastic Gradient Descent", IEEE TNNLS; Li, 2024, "Stochastic Hessian
Fittings with Lie Groups") on the transformer blocks' 2-D weights, AdamW on the rest, split as optim/muon.py and the
Kronecker methods split it. The PSGD part is heavyball's PSGDKron (heavyball 3.2.1), not a copy. For a 2-D weight
W (d_out, d_in) with gradient G:

    m <- b1 m + (1 - b1) G, debiased                     (momentum: heavyball's beta = train.py's beta1)
    Q = Q_1 (x) Q_2, Q_i upper triangular (d_i x d_i)    (a diagonal Q_i for an axis wider than max_factor_dim)
    preconditioner fit, when the schedule says so: v ~ N(0, I), h = m + (1e-9 + eps_f32 |m|) v (a damped probe),
        A = Q h,  B = Q^-T v  (Kronecker products applied axis by axis),
        Q_i <- Q_i - (precond_lr / L_i) triu(A_i A_i^T - B_i B_i^T) Q_i   (A_i A_i^T: A contracted over every
        axis but i; L_i a running bound on the largest eigenvalue of A_i A_i^T + B_i B_i^T)
      a step on the Lie group of triangular matrices that lowers E[h^T P h + v^T P^-1 v], whose minimiser
      P = Q^T Q solves P E[h h^T] P = E[v v^T]: P ~ Cov(h)^-1/2 whitens the gradient noise
    U = clip(P vec(m)) = clip(Q_1^T Q_1 m Q_2^T Q_2)      (heavyball's trust_region_clip_: a soft elementwise clip
                                                          to [-2, 2], so that U has Adam's per-element scale)
    W <- (1 - lr wd) W - lr U

heavyball's defaults throughout: precond_lr=0.1, Q_i initialised to scaled identities (the scale from the first
gradient), the fit on every step for 1000 steps, then with a probability annealed by 0.999 per step down to 0.03
(deterministic: when the running sum of the probabilities passes an integer), lower_bound_beta=0.9.
"""

from contextlib import contextmanager

import torch

from optim.adamw import block_matrices_and_rest, closure_loss


@contextmanager
def heavyball_compile(on):
    """heavyball's torch.compile of its kernels (its module global heavyball.utils.compile_mode) for the steps
    taken inside: heavyball's own mode if on, eager (compile_mode = None) if not; put back after."""
    import heavyball.utils as hb_utils
    before = hb_utils.compile_mode
    if not on:
        hb_utils.compile_mode = None
    try:
        yield
    finally:
        hb_utils.compile_mode = before


def _restore_dtypes(loaded, saved):
    """loaded (torch's load_state_dict casts every floating tensor of the state to the parameter's dtype) with
    the dtypes of saved: heavyball keeps its running lower bounds in float64 and Q in q_dtype."""
    if torch.is_tensor(loaded):
        return saved.to(loaded.device) if torch.is_tensor(saved) and saved.dtype != loaded.dtype else loaded
    if isinstance(loaded, dict):
        return {k: _restore_dtypes(v, saved[k]) if k in saved else v for k, v in loaded.items()}
    if isinstance(loaded, (list, tuple)):
        return type(loaded)(_restore_dtypes(v, s) for v, s in zip(loaded, saved))
    return loaded


class PSGDAdamW(torch.optim.Optimizer):
    """One optimizer over two: heavyball.PSGDKron for the 2-D weights of model.transformer.h (the blocks: attention
    and MLP matrices), torch.optim.AdamW (optim/adamw.py: decay on 2-D tensors only) for the embeddings, the tied
    lm_head, norms and biases, as optim/muon.py and the Kronecker methods split them (SOAP, optim/soap.py, instead
    runs over every parameter). Its param_groups are the two optimizers' groups (the same dicts), PSGD's first:
    train.py's schedule sets each group's lr, and heavyball reads its group's lr at every step.

    Hyperparameters (defaults): lr=1e-3 (heavyball's, both parts), weight_decay=0.1 (both parts, decoupled),
    beta1=0.9 (PSGD's momentum, heavyball's beta, and AdamW's beta1), beta2=0.95, eps=1e-8 (AdamW part only:
    PSGDKron's betas[1] is unused by its Kronecker update), precond_lr=0.1, max_factor_dim=2048 (heavyball's
    max_size_triangular: a wider axis gets a diagonal Q_i), seed=1337 (PSGD's probe vectors v, below),
    psgd_compile='auto' (heavyball's torch.compile of its kernels on CUDA, eager on CPU) | True | False.

    Some warnings:
    - heavyball draws the probe v from torch's global RNG, which train.py seeds per rank: DDP ranks would fit
      different preconditioners and drift apart. Here PSGD's step runs on a generator of its own (seeded by seed,
      the same on every rank, saved in state_dict), so ranks stay equal and a resume is exact.
    - heavyball pickles its preconditioner schedule (a callable) into its state_dict as bytes, which
      torch.load(weights_only=True) passes and heavyball's load_state_dict would pickle.loads: code run from a
      checkpoint. state_dict() drops it and load_state_dict() discards it (it is rebuilt from the arguments).
    - torch's load_state_dict casts the state's floating tensors to the weights' dtype; load_state_dict() puts
      back the saved dtypes (heavyball's float64 lower bounds), without which a resume is not exact.
    - Compilation (psgd_compile): on a CPU, heavyball's default 'max-autotune-no-cudagraphs' compile makes the
      first step take 25-120 s (warm or cold inductor cache), then the step of the tiny test GPT 4.3 ms instead of
      8.5 ms eager, but that of config/adamw_small.py's 16 matrices 160-310 ms instead of 130-140 ms eager (one
      thread): 'auto' runs eagerly there. On CUDA it compiles, as heavyball (compile-first) intends (not measured
      here: no GPU in this repository's tests).
    - Cost: on config/adamw_small.py's model on a CPU an iteration takes ~190 ms (AdamW's ~45 ms), the PSGD step
      ~135 ms of it: the preconditioner is fitted on every step for heavyball's first 1000.
    - PSGD knows nothing of DDP sharding: every rank fits every preconditioner (fine at this scale).
    """

    def __init__(self, model, lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8, precond_lr=0.1,
                 max_factor_dim=2048, seed=1337, psgd_compile='auto'):
        import heavyball  # imports torch.distributed.tensor: a second, so only when PSGD is used

        if psgd_compile not in ('auto', True, False):
            raise ValueError(f"unknown psgd_compile {psgd_compile!r}; known: 'auto', True, False")
        hidden, rest = block_matrices_and_rest(model, weight_decay, 'PSGD')
        device = hidden[0].device
        self.compile = device.type == 'cuda' if psgd_compile == 'auto' else psgd_compile
        q_dtype = 'float64' if hidden[0].dtype == torch.float64 else 'float32'  # Q at least as precise as W
        self.psgd = heavyball.PSGDKron(hidden, lr=lr, beta=beta1, weight_decay=weight_decay, precond_lr=precond_lr,
                                       max_size_triangular=max_factor_dim, q_dtype=q_dtype)
        self.adamw = torch.optim.AdamW(rest, lr=lr, betas=(beta1, beta2), eps=eps,
                                       fused=all(p.is_cuda for p in model.parameters()))
        self.rng = torch.Generator(device=device).manual_seed(seed)
        super().__init__(self.psgd.param_groups + self.adamw.param_groups, {})

    @contextmanager
    def _own_rng(self):
        """torch's global RNG of the PSGD weights' device replaced by self.rng inside (heavyball draws its probes
        from it), put back after."""
        device = self.rng.device
        if device.type == 'cuda':
            get, put = (lambda: torch.cuda.get_rng_state(device)), (lambda s: torch.cuda.set_rng_state(s, device))
        else:
            get, put = torch.get_rng_state, torch.set_rng_state
        outer = get()
        put(self.rng.get_state())
        try:
            yield
            self.rng.set_state(get())
        finally:
            put(outer)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.psgd.param_groups:
            group['base_lr'] = group['lr']  # the lr train.py scheduled (heavyball would warn that it changed)
        with self._own_rng(), heavyball_compile(self.compile):
            self.psgd.step()
        self.adamw.step()
        return loss

    def state_dict(self):
        psgd = self.psgd.state_dict()
        psgd['heavyball'] = {k: v for k, v in psgd['heavyball'].items() if k != 'precond_schedule'}
        return {'psgd': psgd, 'adamw': self.adamw.state_dict(), 'rng': self.rng.get_state()}

    def load_state_dict(self, state_dict):
        if set(state_dict) != {'psgd', 'adamw', 'rng'}:
            raise ValueError(f"not a PSGDAdamW state_dict (keys {sorted(state_dict)}, expected 'psgd', 'adamw' "
                             f"and 'rng')")
        psgd = dict(state_dict['psgd'])
        psgd['heavyball'] = {k: v for k, v in psgd.get('heavyball', {}).items() if k != 'precond_schedule'}
        self.psgd.load_state_dict(psgd)
        saved_ids = [i for g in psgd['param_groups'] for i in g['params']]
        params = [p for g in self.psgd.param_groups for p in g['params']]
        for i, p in zip(saved_ids, params):
            if p in self.psgd.state and i in psgd['state']:
                self.psgd.state[p] = _restore_dtypes(self.psgd.state[p], psgd['state'][i])
        self.adamw.load_state_dict(state_dict['adamw'])
        self.rng.set_state(state_dict['rng'].cpu())
        self.param_groups = self.psgd.param_groups + self.adamw.param_groups  # loading made new group dicts


def psgd(model, lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.95, max_factor_dim=2048, seed=1337, precond_lr=0.1,
         psgd_compile='auto'):
    """The registry's builder: PSGDAdamW with the arguments train.py's config globals can set (lr, weight_decay,
    beta1, beta2, max_factor_dim, seed), and precond_lr and psgd_compile, which no config global names."""
    return PSGDAdamW(model, lr=lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2,
                     max_factor_dim=max_factor_dim, seed=seed, precond_lr=precond_lr, psgd_compile=psgd_compile)
