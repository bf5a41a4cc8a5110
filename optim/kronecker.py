"""
What every Kronecker-factored optimizer (KFAC, Fixed Fisher, EVA, ...) shares: KroneckerOptimizer, a
torch.optim.Optimizer that owns the schedule, the factors' running averages, momentum, weight decay, KL clipping,
grafting, the NaN guard, AdamW for the parameters it does not precondition, state_dict and diagnostics, on the factors
of optim/capture.py (its FactorCapture; the conventions are in its docstring and DESIGN.md), with
Levenberg-Marquardt damping from optim/levenberg_marquardt.py, and its checkpoints, diagnostics, NaN guard and the
checks of its knobs in optim/kronecker_state.py.

One way to plug in a method: subclass KroneckerOptimizer (or optim/eigenbasis.py's EigenbasisOptimizer), take its
own knobs in __init__(model, <own knobs>, **shared) and pass **shared on, and write its math, per layer, in the
methods below the "method's part" line: precondition(st, V) always; update_decomposition(st),
refresh_decomposition(st), new_factors(st, A, G), start_factors(st, V) where it needs them; and say what it captures
with the class attributes statistic, keep_rows, logits_grad, hooked, factor_names. The shared damped solves are in
optim/solves.py. Then one line in optim/__init__.py's OPTIMIZERS.
"""

import torch

from optim.adamw import adam_graft, adamw_for_the_rest, closure_loss
from optim.capture import FactorCapture, logits_module, outer, split_layers, unwrap
from optim.distributed import MODES, Ranks, world
from optim.kronecker_state import KroneckerState, check_shared_knobs
from optim.levenberg_marquardt import adapt_damping
from optim.quadratic_step import quadratic_step


class KroneckerOptimizer(KroneckerState, torch.optim.Optimizer):
    """Base of the Kronecker-factored optimizers. Per step, for each preconditioned nn.Linear (bias as the last
    column of V, see the module docstring):
        on factor-update steps:  A <- decay A + (1 - decay) A_new, same for G (the first update sets A = A_new)
        on inverse-update steps: update_decomposition (the method's inverses / eigenbases)
        U = precondition(V)                                   the method's damped inverse applied to V
        U <- U * ||adam(V)|| / ||U||                          if grafting == 'adam'
        nu = min(1, sqrt(kl_clip / sum_layers lr^2 <U, V>)),  U <- nu U          if kl_clip is not None
        buf <- momentum buf + U;   W <- W (1 - lr wd) - lr buf   (no weight decay on the bias column)
        (step_rule='quadratic' instead: W <- W (1 - lr adamw_lr_scale wd) + alpha Delta + mu delta0)
    Every other parameter (embeddings, norms, the tied lm_head, excluded or too wide layers) is stepped by AdamW
    (betas (beta1, beta2), eps; decay on 2-D tensors only) at lr * adamw_lr_scale.

    The shared hyperparameters, declared here once (every method takes them; its own are in its file). The defaults
    are train.py's (tests/test_optim_kronecker.py checks that they agree):
        lr=1e-3, weight_decay=0.1 (decoupled), momentum=0.9, damping=1e-3 (lambda, > 0),
        damping_mode='absolute' ('relative': lambda * (tr A / dim A) (tr G / dim G), scale-free),
        factor_decay=0.95, factor_update_freq=10, inv_update_freq=10, kl_clip=None (off; a number clips),
        fisher='empirical' (training labels, free) | 'sampled' (labels drawn from the model's softmax on
        factor-update steps: one extra backward, the true Fisher), exclude='' (comma-separated module names),
        max_factor_dim=4096 (wider layers go to AdamW), grafting='none' | 'adam', beta1=0.9, beta2=0.95, eps=1e-8,
        adamw_lr_scale=1.0, damping_schedule='constant' | 'lm' (Levenberg-Marquardt, Martens & Grosse 2015 section
        6.5: after step(), call adapt_damping(model, batches) with the step's micro-batches every
        damping_update_freq=5 steps; the rule and its caveat are in optim/levenberg_marquardt.py),
        kfac_approx='expand' (every token a sample) | 'reduce' (a sequence a sample: optim/capture.py),
        step_rule='lr' | 'quadratic' (alpha, mu from the quadratic model, Martens & Grosse section 7: lr only caps
        alpha; needs set_quadratic_batches before each solving step; optim/quadratic_step.py), step_rule_freq=1.

    A plain loss.backward(), then step(), as with any torch.optim optimizer, is enough for an unscaled mean loss of
    one micro-batch per step; gradient accumulation, fp16 and fisher='sampled' call optimizer.backward(scaled_loss,
    logits, loss_scale) instead (FactorCapture.check_plain_backward says why; step() refuses what it can see). A
    NaN/Inf in a gradient or a new factor skips the step (counted, printed; factors keep their last finite values);
    a decomposition that fails is retried as optim/solves.py's robust says (counted, printed).

    Under DDP (torchrun; build the optimizer on the unwrapped model, after init_process_group) the factors are
    averaged over ranks on factor-update steps and each layer's decomposition runs on one rank: the attribute
    distribute = 'decomposition' (default: the owner broadcasts its decomposition) | 'gradient' (it keeps it and
    broadcasts the preconditioned gradient each step) | 'none' (every rank decomposes every layer) says what is
    broadcast (optim/distributed.py). Checkpoints and diagnostics: optim/kronecker_state.py.

    Caveats:
    - Under torch.compile, factor-update steps break the graph at each hooked layer (the hooks run eagerly) and
      other steps run the hook-free graph; the factors equal the eager ones. fisher='sampled' retains the graph
      for a second backward, so it turns off torch.compile's donated buffers process-wide.
    - Gradient checkpointing would re-run forwards and count their tokens in A twice; a layer applied several
      times in one forward counts each application's tokens (the expand setting).
    - The NaN guard costs one host sync per step.
    """

    # What a method captures (class attributes):
    statistic = staticmethod(outer)  # summed per token by the hooks: x^T x; EVA sums vectors, iEF squared norms
    keep_rows = False  # True: st['rows'] = the step's per-token (a, g_hat) on factor-update steps (EKFAC, KPSVD, iEF)
    logits_grad = False  # True: self.capture.logits, each token's ||dl/dz||^2 from self.logits_module (iEF, iEKFAC)
    logits_module = None  # the module that outputs the logits; None: lm_head, else the last nn.Linear
    hooked = True  # False: no hooks, the factors come from the gradient (start_factors; DyKAF)
    factor_names = ('A', 'G')  # the keys of the input- and output-side factors in st (DyKAF: R, L)

    def __init__(self, model, lr=1e-3, weight_decay=0.1, momentum=0.9, damping=1e-3, damping_mode='absolute',
                 factor_decay=0.95, factor_update_freq=10, inv_update_freq=10, kl_clip=None, fisher='empirical',
                 exclude='', max_factor_dim=4096, grafting='none', beta1=0.9, beta2=0.95, eps=1e-8,
                 adamw_lr_scale=1.0, damping_schedule='constant', damping_update_freq=5, kfac_approx='expand',
                 step_rule='lr', step_rule_freq=1):
        check_shared_knobs(damping=damping, damping_mode=damping_mode, factor_decay=factor_decay, momentum=momentum,
                           kl_clip=kl_clip, fisher=fisher, grafting=grafting, damping_schedule=damping_schedule,
                           kfac_approx=kfac_approx, step_rule=step_rule, factor_update_freq=factor_update_freq,
                           inv_update_freq=inv_update_freq, max_factor_dim=max_factor_dim,
                           damping_update_freq=damping_update_freq, step_rule_freq=step_rule_freq)
        self.damping, self.damping_mode, self.factor_decay = float(damping), damping_mode, factor_decay
        self.factor_update_freq, self.inv_update_freq = factor_update_freq, inv_update_freq
        self.kl_clip, self.fisher, self.grafting, self.eps = kl_clip, fisher, grafting, eps
        self.betas, self.adamw_lr_scale = (beta1, beta2), adamw_lr_scale
        self.damping_schedule, self.damping_update_freq = damping_schedule, damping_update_freq
        self.lm_ratio, self._lm_before = float('nan'), None  # the last reduction ratio; the weights before the step
        self.step_rule, self.step_rule_freq, self.quadratic_batches = step_rule, step_rule_freq, None
        self.qm_alpha = self.qm_mu = self.qm_predicted = float('nan')  # step_rule='quadratic': the last solve,
        self.qm_solved_step = None  # and the step it was made at

        model = unwrap(model)
        self.modules_, others = split_layers(model, exclude, max_factor_dim)
        self.param_names = {p: n for n, p in model.named_parameters()}
        kron = {p for m in self.modules_.values() for p in m.parameters()}
        groups = [dict(params=list(m.parameters()), name=name, kind='kronecker', lr=lr, weight_decay=weight_decay,
                       momentum=momentum) for name, m in self.modules_.items()]
        # AdamW steps the other parameters' groups itself; they are also ours (same dicts, same state), so train.py's
        # group['lr'] = lr * group.get('lr_scale', 1.0) and state_dict() reach them
        self.adamw = adamw_for_the_rest([p for p in model.parameters() if p not in kron], lr, weight_decay,
                                        self.betas, eps, adamw_lr_scale)
        super().__init__(groups + (self.adamw.param_groups if self.adamw else []),
                         defaults=dict(lr=lr, weight_decay=weight_decay))
        self._link_adamw()

        dtypes = {name: torch.float64 if m.weight.dtype == torch.float64 else torch.float32
                  for name, m in self.modules_.items()}
        logits = logits_module(model, self.logits_module) if self.logits_grad else None
        self.kfac_approx = kfac_approx
        self.capture = FactorCapture(self.modules_ if self.hooked else {}, self.statistic, dtypes, self.keep_rows,
                                     logits, reduce=kfac_approx == 'reduce')
        self.timer = self.capture.timer
        self.layer_state = {name: {} for name in self.modules_}  # factors, decompositions, buffers per layer
        self.steps, self.skipped_steps, self.decomp_retries, self._steps_since_log = 0, 0, 0, 0
        self.decomp_shifts = 0  # decompositions that needed a shift of a factor (robust)
        self.decompositions = 0  # update_decomposition calls on this rank
        self.ranks = None  # under DDP (more than one rank): optim/distributed.py's Ranks, made by the setter below
        self._consolidated = None  # distribute='gradient': other ranks' layer states, for rank 0's next state_dict()
        self.distribute = 'decomposition'
        self._nu, self._ratio, self._backward_called = 1.0, 0.0, False
        self._arm()
        if fisher == 'sampled':
            # the sampled backward retains the graph for the training-label one, which torch.compile's backward
            # refuses when it donates (frees) buffers; this only gives up that memory saving
            torch._functorch.config.donated_buffer = False
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0):
            print(f"{type(self).__name__}: preconditioned ({len(self.modules_)}): {', '.join(self.modules_)}")
            print(f"{type(self).__name__}: AdamW ({len(others)}): "
                  f"{', '.join(f'{n} ({why})' for n, why in others.items())}")

    @property
    def distribute(self):
        """Under DDP, what each layer's owner rank broadcasts: 'decomposition', 'gradient' or 'none' (see the
        class docstring and optim/distributed.py)."""
        return self._distribute

    @distribute.setter
    def distribute(self, mode):
        if mode not in MODES:
            raise ValueError(f"unknown distribute {mode!r}; known: {', '.join(MODES)}")
        if self.ranks is None and world()[1] > 1:
            has = type(self).update_decomposition is not KroneckerOptimizer.update_decomposition
            self.ranks = Ranks(self, mode, has)
        elif self.ranks is not None and mode != self._distribute:
            self.ranks.set_mode(self, mode)
            for st in self.layer_state.values():  # another mode holds decompositions elsewhere: recompute them
                st.pop('decomposed', None)
        self._distribute = mode

    def __del__(self):  # the hooks hold the capture, not the optimizer: once it is gone, so are they
        if getattr(self, 'capture', None) is not None:
            self.capture.disarm()

    # ---- the method's part: override these ----

    def precondition(self, st, V):
        """U = the method's damped inverse of the layer's factors applied to V (d_out, d_in [+1])."""
        raise NotImplementedError

    def update_decomposition(self, st):
        """Recompute what precondition() needs from st['A'], st['G'] (inverses, eigenbases) into st."""

    def refresh_decomposition(self, st):
        """Cheap refresh on factor-update steps between update_decomposition()s; by default none."""

    def new_factors(self, st, A, G):
        """The step's factors to average, from the captured means A, G (and st['rows'] with keep_rows)."""
        return A, G

    def start_factors(self, st, V):
        """hooked = False: a layer's first (finite) gradient V starts its factors in st."""
        raise NotImplementedError

    # ---- helpers for methods ----

    def damping_for(self, a, g):
        """The layer's lambda: damping, or in 'relative' mode damping * a * g with a = tr A / dim A and
        g = tr G / dim G (the mean eigenvalue of A (x) G); falls back to damping where a * g is 0."""
        if self.damping_mode == 'absolute':
            return self.damping
        ag = a * g
        return torch.where(ag > 0, self.damping * ag, torch.full_like(ag, self.damping))

    # ---- the loop ----

    def backward(self, scaled_loss, logits=None, loss_scale=1.0):
        """scaled_loss.backward(), scaled_loss = loss_scale * loss with loss the mean cross-entropy over the
        micro-batch's tokens, computed from logits; on factor-update steps with fisher='sampled', first the sampled
        labels' backward that records G (FactorCapture.sampled_backward). With fisher='empirical', a plain
        loss.backward() of one micro-batch's unscaled loss is this call, loss_scale 1."""
        self.capture.loss_scale = float(loss_scale)
        if self.capture.armed:
            self._backward_called = True
            if self.fisher == 'sampled':
                self.capture.sampled_backward(logits, loss_scale)
        scaled_loss.backward()

    def _arm(self):
        """Hooks on for the coming iteration iff it updates factors; forget what the last one recorded."""
        if self.steps % self.factor_update_freq == 0:
            self.capture.arm()
        else:
            self.capture.disarm()
        self._clear()
        self.capture.record_grads = self.fisher == 'empirical'
        self.capture.loss_scale, self._backward_called = 1.0, False  # what a plain loss.backward() means

    def _link_adamw(self):
        if self.adamw is not None:
            self.adamw.param_groups = [g for g in self.param_groups if g['kind'] == 'adamw']
            self.adamw.state = self.state

    def zero_grad(self, set_to_none=True):
        """Clears the gradients and whatever the hooks recorded since the last step (e.g. of a step that a
        GradScaler skipped)."""
        super().zero_grad(set_to_none=set_to_none)
        self._clear()

    def _clear(self):
        """Forget what the hooks recorded, and the step's rows."""
        self.capture.clear()
        for st in self.layer_state.values():
            st.pop('rows', None)

    def factors(self):
        """{module name: (A, G)} of the preconditioned layers that have factors (EVA: (a_bar, g_bar); DyKAF: (R, L))."""
        A, G = self.factor_names
        return {name: (st[A], st[G]) for name, st in self.layer_state.items() if A in st}

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        factor_step = self.capture.armed
        if factor_step and not self._backward_called:
            self.capture.check_plain_backward(type(self).__name__, self.fisher)
        new = self.capture.take() if factor_step else {}
        for name, rows in self.capture.rows.items():
            self.layer_state[name]['rows'] = rows
        if new and type(self).new_factors is not KroneckerOptimizer.new_factors:
            with self.timer('factors', next(iter(new.values()))[0].device):
                new = {name: self.new_factors(self.layer_state[name], A, G) for name, (A, G) in new.items()}
        if not self._all_finite(new):
            self._skip(new)
            self._arm()
            return loss
        if self.damping_schedule == 'lm' and self.steps % self.damping_update_freq == 0:  # theta, for adapt_damping
            self._lm_before = [p.detach().clone() for g in self.param_groups for p in g['params']]

        layers = [(g, self.layer_state[g['name']]) for g in self.param_groups if g['kind'] == 'kronecker']
        first = self.factor_names[0]  # a layer has factors iff st holds this key
        for group, st in layers:
            if group['name'] in new:
                device = group['params'][0].device
                with self.timer('factors', device):
                    for key, f in zip(self.factor_names, new[group['name']]):
                        st[key] = f if key not in st else st[key].lerp_(f, 1 - self.factor_decay)
            elif not self.hooked and first not in st and group['params'][0].grad is not None:
                V = gradient_matrix(group)
                self.start_factors(st, V.to(torch.promote_types(V.dtype, torch.float32)))
        inv_step = self.steps % self.inv_update_freq == 0
        full, refresh = [], []  # layers to decompose, and to refresh (factors updated between decompositions)
        for group, st in layers:
            if first not in st:
                continue
            if inv_step or not st.get('decomposed'):
                full.append(group['name'])
            elif group['name'] in new and type(self).refresh_decomposition is not \
                    KroneckerOptimizer.refresh_decomposition:
                refresh.append(group['name'])
        if full or refresh:
            with self.timer('decomp', layers[0][0]['params'][0].device):
                if self.ranks is None:
                    for name in full:
                        self.update_decomposition(self.layer_state[name])
                        self.decompositions += 1
                    for name in refresh:
                        self.refresh_decomposition(self.layer_state[name])
                else:  # each on its owner rank, then (distribute='decomposition') broadcast
                    self.ranks.decompose(self, full, refresh)
            for name in full:
                self.layer_state[name]['decomposed'] = True

        active = []  # (group, st, V) of the layers that have a gradient
        for group, st in layers:
            W = group['params'][0]
            if W.grad is None:
                continue
            if first not in st:
                raise RuntimeError(f"{group['name']} has a gradient but no Kronecker factors: was its forward run in "
                                   "train mode with grad enabled on a factor-update step?")
            active.append((group, st, gradient_matrix(group).to(st[first].dtype)))
        if active:
            with self.timer('precond', active[0][2].device):
                Us = [self.precondition(st, V) for _, st, V in active] if self.ranks is None else \
                    self.ranks.precondition(self, active)
                if self.grafting == 'adam':
                    Us = [adam_graft(st, U, V, self.betas, self.eps, self.steps + 1)
                          for (_, st, V), U in zip(active, Us)]
                if self.kl_clip is not None:
                    vg = sum(g['lr'] ** 2 * (U * V).sum() for (g, _, V), U in zip(active, Us))
                    nu = torch.where(vg > 0, (self.kl_clip / vg).sqrt(), torch.ones_like(vg)).clamp(max=1.0)
                    Us = [nu * U for U in Us]
                    self._nu = nu
                self._ratio = (torch.stack([U.square().sum() for U in Us]).sum().sqrt() /
                               torch.stack([V.square().sum() for *_, V in active]).sum().sqrt().clamp_min(1e-30))
                if self.step_rule == 'quadratic':  # alpha, mu from the quadratic model (optim/quadratic_step.py)
                    quadratic_step(self, active, Us)
                for (group, st, _), U in zip(active, Us if self.step_rule == 'lr' else []):
                    if group['momentum']:
                        if 'momentum_buffer' in st:
                            U = st['momentum_buffer'].mul_(group['momentum']).add_(U)
                        else:
                            U = st['momentum_buffer'] = U.clone()
                    W, lr = group['params'][0], group['lr']
                    W.mul_(1 - lr * group['weight_decay'])  # decoupled, on the weight only
                    W.add_(U[:, :W.shape[1]].to(W.dtype), alpha=-lr)
                    if len(group['params']) == 2:
                        group['params'][1].add_(U[:, -1].to(W.dtype), alpha=-lr)

        if self.adamw is not None:
            self.adamw.step()
        self.steps += 1
        self._steps_since_log += 1
        self._arm()
        return loss

    @property
    def needs_batches(self):
        """True before a step() that solves the quadratic model (step_rule='quadratic', every step_rule_freq steps):
        train.py then calls set_quadratic_batches(model, batches) with the step's micro-batches."""
        return self.step_rule == 'quadratic' and self.steps % self.step_rule_freq == 0

    def set_quadratic_batches(self, model, batches):
        """The model and the step's [(X, Y)] micro-batches (model(X, Y) -> (logits, loss)) for the next step()."""
        self.quadratic_batches = (model, batches)

    @property
    def lm_pending(self):
        """True after a step() that adapt_damping() should follow (damping_schedule='lm', every T1 steps)."""
        return self._lm_before is not None

    def adapt_damping(self, model, batches):
        """The Levenberg-Marquardt update of lambda after a step (class docstring; optim/levenberg_marquardt.py)."""
        return adapt_damping(self, model, batches)


def gradient_matrix(group):
    """V = [dL/dW | dL/db] (d_out, d_in [+1]) of a preconditioned layer's param group: the bias as the last column."""
    W = group['params'][0]
    return torch.cat([W.grad, group['params'][1].grad[:, None]], 1) if len(group['params']) == 2 else W.grad
