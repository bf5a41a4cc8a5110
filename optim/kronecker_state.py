"""
What a Kronecker optimizer (optim/kronecker.py) saves, restores and reports: state_dict() and load_state_dict() (the
factors, decompositions and buffers of every layer, the step counts and an adapted lambda; under DDP with
distribute='gradient', consolidate_state_dict() first, as for torch's ZeroRedundancyOptimizer), and diagnostics(),
the flat floats of the train log; the NaN guard's check and report; and the checks of the shared knobs.
"""

import math

import torch


def check_shared_knobs(*, damping, damping_mode, factor_decay, momentum, kl_clip, fisher, grafting, damping_schedule,
                       kfac_approx, step_rule, factor_update_freq, inv_update_freq, max_factor_dim,
                       damping_update_freq, step_rule_freq):
    """A ValueError naming the bad value of a shared knob of KroneckerOptimizer (its docstring says what each is)."""
    for arg, value, known in [('fisher', fisher, ('empirical', 'sampled')),
                              ('damping_mode', damping_mode, ('absolute', 'relative')),
                              ('grafting', grafting, ('none', 'adam')),
                              ('damping_schedule', damping_schedule, ('constant', 'lm')),
                              ('kfac_approx', kfac_approx, ('expand', 'reduce')),
                              ('step_rule', step_rule, ('lr', 'quadratic'))]:
        if value not in known:
            raise ValueError(f"unknown {arg} {value!r}; known: {', '.join(known)}")
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    for arg, value, ok, need in [
            ('damping', damping, number(damping) and 0 < damping < math.inf, 'a finite number > 0'),
            ('kl_clip', kl_clip, kl_clip is None or number(kl_clip) and kl_clip > 0, '> 0 or None (no clipping)'),
            ('factor_decay', factor_decay, number(factor_decay) and 0 <= factor_decay < 1, 'in [0, 1)'),
            ('momentum', momentum, number(momentum) and 0 <= momentum < 1, 'in [0, 1)'),
            *[(k, v, isinstance(v, int) and v >= 1, 'an int >= 1') for k, v in [
                ('factor_update_freq', factor_update_freq), ('inv_update_freq', inv_update_freq),
                ('max_factor_dim', max_factor_dim), ('damping_update_freq', damping_update_freq),
                ('step_rule_freq', step_rule_freq)]],
            ('step_rule', step_rule, step_rule == 'lr' or (grafting == 'none' and kl_clip is None),
             "'lr' with grafting or kl_clip (the quadratic model sets the step's length)")]:
        if not ok:
            raise ValueError(f"{arg} must be {need}, got {value!r}")


class KroneckerState:
    """KroneckerOptimizer's checkpoints, train-log diagnostics and NaN guard (a base class of it; reads its
    attributes)."""

    def diagnostics(self):
        """Flat floats for the train log. damping: lambda (the configured one, or the adapted one with
        damping_schedule='lm', then also lm_ratio: the last reduction ratio); damping_eff: the mean over layers of the
        lambda in use (differs in 'relative' mode); kl_nu: the last step's KL-clip factor (1: no clipping);
        update_grad_ratio: ||U|| / ||V|| over all preconditioned layers after grafting and clipping, before
        momentum; skipped_steps, decomp_retries, decomp_shifts: counts since the start; ms_factors (hooks, sampled
        backward, running averages), ms_decomp, ms_precond (preconditioning, clipping, the weight update): mean ms per
        step since the last call."""
        n = max(self._steps_since_log, 1)
        ms = self.timer.read()
        lams = [st['damping_eff'] for st in self.layer_state.values() if 'damping_eff' in st]
        out = dict(damping=self.damping, damping_eff=float(sum(float(x) for x in lams) / len(lams)) if lams else
                   self.damping, kl_nu=float(self._nu), update_grad_ratio=float(self._ratio),
                   skipped_steps=float(self.skipped_steps), decomp_retries=float(self.decomp_retries),
                   decomp_shifts=float(self.decomp_shifts))
        if self.damping_schedule == 'lm':  # the last reduction ratio (NaN before the first)
            out['lm_ratio'] = float(self.lm_ratio)
        if self.step_rule == 'quadratic':  # the quadratic model's last alpha, mu and predicted change M(delta)
            out.update(qm_alpha=self.qm_alpha, qm_mu=self.qm_mu, qm_predicted=self.qm_predicted)
        out.update({f'ms_{k}': ms.get(k, 0.0) / n for k in ('factors', 'decomp', 'precond')})
        if self.ranks is not None:  # under DDP: comm_mb, this rank's MB all-reduced or broadcast per step (payload;
            # DDP's gradient all-reduce is not counted), ms_comm its time (within ms_factors/decomp/precond), and
            # decompositions, this rank's update_decomposition calls since the start
            out.update(comm_mb=(self.ranks.comm_bytes + self.capture.comm_bytes) / 2**20 / n,
                       ms_comm=ms.get('comm', 0.0) / n, decompositions=float(self.decompositions))
            self.ranks.comm_bytes = self.capture.comm_bytes = 0
        self._steps_since_log = 0
        return out

    # ---- the NaN guard: a non-finite gradient or new factor skips the step ----

    def _all_finite(self, new):
        """True iff every gradient and new factor is finite (one host sync)."""
        tensors = [p.grad for g in self.param_groups for p in g['params'] if p.grad is not None]
        tensors += [t for pair in new.values() for t in pair]
        if not tensors:
            return True
        return bool(torch.stack([t.sum().float() for t in tensors]).isfinite().all())  # one sync

    def _skip(self, new):
        """Count and report a skipped step, naming what was not finite."""
        bad = [self.param_names.get(p, '?') + '.grad' for g in self.param_groups for p in g['params']
               if p.grad is not None and not torch.isfinite(p.grad).all()]
        bad += [f'{n}.{f}' for n, pair in new.items() for f, t in zip(self.factor_names, pair)
                if not torch.isfinite(t).all()]
        self.skipped_steps += 1
        print(f"{type(self).__name__}: non-finite {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} at step "
              f"{self.steps}: step skipped ({self.skipped_steps} so far), factors keep their last finite values")

    def consolidate_state_dict(self):
        """Under DDP with distribute='gradient', call on every rank before rank 0's state_dict() (as for torch's
        ZeroRedundancyOptimizer): rank 0 then gets the state of the layers that other ranks own. Else a no-op."""
        if self.ranks is not None and self.ranks.mode == 'gradient':
            self._consolidated = self.ranks.consolidate(self)

    def state_dict(self):
        sd = super().state_dict()  # param groups and AdamW's state
        layers = {name: dict(st) for name, st in self.layer_state.items()}
        if self.ranks is not None and self.ranks.mode == 'gradient':  # other ranks' layers, as consolidated
            layers, self._consolidated = self.ranks.saved_layers(self, layers, self._consolidated), None
        sd['kronecker'] = dict(steps=self.steps, skipped_steps=self.skipped_steps, decomp_retries=self.decomp_retries,
                               decomp_shifts=self.decomp_shifts,
                               layers=layers, damping=self.damping, lm_ratio=self.lm_ratio,
                               qm=(self.qm_alpha, self.qm_mu, self.qm_predicted))
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        kron = state_dict.pop('kronecker', None)
        if kron is None:
            raise ValueError(f"not a {type(self).__name__} state_dict (it has no 'kronecker' entry)")
        saved = [g.get('name') for g in state_dict['param_groups'] if g.get('kind') == 'kronecker']
        if saved != list(self.modules_) or set(kron['layers']) != set(self.modules_):
            raise ValueError(f"state_dict preconditions layers {saved}, this optimizer {list(self.modules_)}")
        super().load_state_dict(state_dict)
        self._link_adamw()
        self.steps, self.skipped_steps = kron['steps'], kron['skipped_steps']
        self.decomp_retries, self.decomp_shifts = kron['decomp_retries'], kron.get('decomp_shifts', 0)
        if self.damping_schedule == 'lm':  # the adapted lambda goes on; with 'constant' the configured one holds
            self.damping, self.lm_ratio = kron.get('damping', self.damping), kron.get('lm_ratio', float('nan'))
        self.qm_alpha, self.qm_mu, self.qm_predicted = kron.get('qm', (float('nan'),) * 3)
        for name, st in kron['layers'].items():  # keep the saved dtypes (factors may be wider than the weights)
            device = self.modules_[name].weight.device
            if self.ranks is not None and self.ranks.mode == 'gradient' and not self.ranks.owns(name):
                st = self.ranks.loaded_layer(self, st)
            self.layer_state[name] = {k: v.to(device) if torch.is_tensor(v) else v for k, v in st.items()}
        self._arm()
