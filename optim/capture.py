"""
The factor capture every Kronecker-factored optimizer shares: FactorCapture, hooks on nn.Linear layers that sum the
statistics of their inputs and output gradients over the tokens of one optimizer step, optionally keeping the per-token
rows (EKFAC, KPSVD, iEF) and each token's logits-gradient norm (iEF, iEKFAC); and which layers get them
(split_layers). optim/kronecker.py's KroneckerOptimizer owns one, built from its method's class attributes.

Conventions (DESIGN.md), for a layer y = W x + b with W (d_out, d_in):
    a = [x; 1] with a bias, else x;   V = [dL/dW | dL/db] (d_out, d_in + 1): the bias gradient is the last column
    M = tokens of the micro-batch (B*T), L = (1/M) sum_m l_m, g_hat_m = M * dL/dy_m = dl_m/dy_m
    A = (1/M) sum_m a_m a_m^T,  G = (1/M) sum_m g_hat_m g_hat_m^T   (tokens are samples: the "expand" setting)
    F ~ A (x) G, and (A (x) G)^-1 vec(V) = vec(G^-1 V A^-1), vec stacking columns
The reduce setting (kfac_approx='reduce', Eschenhagen et al. 2023, for layers shared over a sequence of T tokens,
inputs (..., T, d_in)): per sequence n of the N = M / T, a_n = (1/T) sum_t a_nt and g_hat_n = (1/sqrt(T)) sum_t
g_hat_nt, A = (1/N) sum_n a_n a_n^T, G = (1/N) sum_n g_hat_n g_hat_n^T (curvlinops' KFACType.REDUCE; T = 1 is
expand). N rows instead of M: cheaper to capture.
"""

import time
from collections import defaultdict
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from optim.distributed import all_gather_rows, average_factors, world


def outer(x):
    """Sum over tokens of x x^T, x (M, d): what KFAC-type factors sum."""
    return x.T @ x  # (d, d)


class Timer:
    """Milliseconds spent per key, summed until read(). CUDA work is timed by events, resolved (one sync) in read();
    a key entered again while it runs (hooks inside the sampled backward) is counted once."""

    def __init__(self):
        self.ms, self.events, self.depth = defaultdict(float), defaultdict(list), defaultdict(int)

    @contextmanager
    def __call__(self, key, device):
        if self.depth[key]:
            yield
            return
        self.depth[key] += 1
        try:
            if device.type == 'cuda':
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                yield
                end.record()
                self.events[key].append((start, end))
                if len(self.events[key]) > 4096:  # nobody reads: resolve now rather than hold events forever
                    self._resolve()
            else:
                t0 = time.perf_counter()
                yield
                self.ms[key] += 1e3 * (time.perf_counter() - t0)
        finally:
            self.depth[key] -= 1

    def _resolve(self):
        if any(self.events.values()):
            torch.cuda.synchronize()
        for key, pairs in self.events.items():
            self.ms[key] += sum(start.elapsed_time(end) for start, end in pairs)
        self.events.clear()

    def read(self):
        self._resolve()
        ms, self.ms = dict(self.ms), defaultdict(float)
        return ms


class FactorCapture:
    """Hooks on some nn.Linear layers that sum statistics of their inputs a and output gradients g_hat over the
    tokens of one optimizer step (all its micro-steps). Layout: tokens flattened, a (M, d_in [+1]), g_hat (M, d_out);
    statistic(x) is what gets summed: x^T x (outer) for KFAC-type factors, x.sum(0) for EVA's vectors.
    take() returns the means over all tokens seen since the last take()/clear(): {name: (A, G)}.

    The forward hook records a and puts a tensor hook on the layer's output for g_hat: a full backward hook breaks
    when the output is then modified in place (pytorch#61519), and so does a tensor hook on a view (see below).
    Loss scaling: the gradient that reaches the output is loss_scale * dL/dy, so g_hat = (M / loss_scale) * grad,
    M the rows of that output. Only modules in training mode with grad enabled record (eval passes do not), and
    arm()/disarm() add and remove the hooks, so steps that update no factor pay nothing. record_grads gates the
    tensor hooks (the sampled Fisher records G in its own backward, not in the training-label one). passes counts
    each layer's recorded forwards since the last take()/clear() (step() reads it after plain backwards). Under
    torch.compile each hook is a graph break and runs eagerly; the factors equal the eager ones.

    rows=True also keeps the rows the statistics came from: after take(), self.rows = {name: (a, g_hat)} of the step
    (its micro-steps concatenated in order; under DDP every rank's, all-gathered), M (d_in + d_out) numbers a layer,
    until clear(). logits=module hooks the module that outputs the logits as well: self.logits (LogitsGrad).
    """

    def __init__(self, modules, statistic, dtypes, rows=False, logits=None, reduce=False):
        self.modules, self.dtypes, self.reduce = modules, dtypes, reduce  # name -> nn.Linear / dtype; the setting
        self.statistic = (lambda x: Rows(statistic(x), x)) if rows else statistic
        self.loss_scale, self.record_grads = 1.0, True
        self.timer = Timer()
        self.handles, self.sums, self.passes, self.rows = [], {}, {}, {}
        self.comm_bytes = 0  # under DDP: bytes averaged over ranks by take()
        self.logits = LogitsGrad(logits, self) if logits is not None else None

    @property
    def armed(self):
        return bool(self.handles)

    def arm(self):
        if not self.handles:
            self.handles = [m.register_forward_hook(partial(self._forward_hook, name))
                            for name, m in self.modules.items()]
            if self.logits is not None:  # after the layers' hooks
                self.handles.append(self.logits.module.register_forward_hook(self.logits.forward_hook))

    def disarm(self):
        for h in self.handles:
            h.remove()
        self.handles = []
        self.clear()

    def clear(self):
        self.sums, self.passes, self.rows = {}, {}, {}
        if self.logits is not None:
            self.logits.clear()

    def _add(self, name, i, stat, tokens):
        s = self.sums.setdefault(name, [0, 0, 0, 0])  # sum of a-statistics, their tokens, same for g_hat
        s[2 * i] = s[2 * i] + stat
        s[2 * i + 1] += tokens

    @torch.compiler.disable  # under torch.compile: a graph break, and the hook runs eagerly on real tensors
    def _forward_hook(self, name, module, inputs, output):
        if not (module.training and torch.is_grad_enabled()):
            return
        self.passes[name] = self.passes.get(name, 0) + 1
        with self.timer('factors', output.device), torch.no_grad(), torch.autocast(output.device.type, enabled=False):
            x = inputs[0].detach()
            T = x.shape[-2] if self.reduce and x.dim() >= 3 else 1  # tokens per sequence (reduce), else 1
            if T > 1:  # a_n = mean over the sequence's T tokens
                x = x.reshape(-1, T, module.in_features).mean(1)
            x = x.reshape(-1, module.in_features).to(self.dtypes[name])  # (M, d_in), or (N, d_in) reduced
            if module.bias is not None:
                x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)  # a = [x; 1]
            self._add(name, 0, self.statistic(x), x.shape[0])
        # For inputs that are not 2-D, F.linear returns a view of its (M, d_out) matmul, and an in-place op on that
        # view (ReLU(inplace=True)) drops the view's hooks; the base's survive and see the gradient before it.
        base = output._base
        (base if base is not None and base.numel() == output.numel() else output).register_hook(
            partial(self._grad_hook, name, T))

    def _grad_hook(self, name, T, grad):
        if not self.record_grads:
            return
        with self.timer('factors', grad.device), torch.no_grad(), torch.autocast(grad.device.type, enabled=False):
            g = grad.detach().reshape(-1, grad.shape[-1]).to(self.dtypes[name])  # (M, d_out)
            g = g * (g.shape[0] / self.loss_scale)  # g_hat = M dL/dy
            if T > 1:  # g_hat_n = sum over the sequence's T tokens / sqrt(T)
                g = g.view(-1, T, g.shape[-1]).sum(1) / T ** 0.5
            self._add(name, 1, self.statistic(g), g.shape[0])

    def sampled_backward(self, logits, loss_scale):
        """fisher='sampled' (the true Fisher): one backward of the loss with labels drawn from softmax(logits), which
        records G and leaves .grad alone. It runs torch.autograd.grad onto the layers' biases (weights where there
        is none), not onto their outputs: an in-place activation rewrites an output, and the gradient before it
        would not be computed."""
        if logits is None:
            raise ValueError("fisher='sampled' needs the logits: optimizer.backward(scaled_loss, logits, loss_scale)")
        with self.timer('factors', logits.device):
            with torch.no_grad():  # y_m ~ softmax(logits_m), in row chunks: float32 probabilities are big
                flat = logits.detach().reshape(-1, logits.shape[-1])  # (M, vocab)
                dtype = torch.promote_types(flat.dtype, torch.float32)
                y = torch.cat([torch.multinomial(c.to(dtype).softmax(-1), 1) for c in flat.split(4096)])[:, 0]
            loss_sampled = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y)  # same mean over M tokens
            self.record_grads = True
            ends = [m.weight if m.bias is None else m.bias for m in self.modules.values()]
            torch.autograd.grad(loss_sampled * loss_scale, ends, retain_graph=True, allow_unused=True)
            self.record_grads = False

    def check_plain_backward(self, who, fisher):
        """A factor-update step whose backwards were all plain loss.backward()s: refuse what they cannot give. The
        hooks read g_hat = M dL/dy of an unscaled mean loss; gradient accumulation (loss_scale = 1 / micro-steps) and
        fp16 (GradScaler's scale, times that) need the loss scale, fisher='sampled' the logits. A GradScaler's scale
        cannot be seen here (G would come out scale^2 too large): under fp16 always call optimizer.backward."""
        call = "call optimizer.backward(scaled_loss, logits, loss_scale)"
        if self.passes and fisher == 'sampled':
            raise RuntimeError(f"{who}: fisher='sampled' draws labels from the logits, which a plain "
                               f"loss.backward() does not pass: {call} in place of scaled_loss.backward()")
        many = {name: n for name, n in self.passes.items() if n > 1}
        if many:  # n micro-steps of loss / n each: g_hat = M grad would be n times too small, G n^2 times
            name, n = next(iter(many.items()))
            raise RuntimeError(f"{who}: {name} ran {n} forward passes in this step with plain "
                               f"backward(s) only; under gradient accumulation G needs each micro-step's loss scale "
                               f"(and a layer applied several times per forward needs it too): {call} for each "
                               "micro-step, loss_scale = 1 / micro-steps (times GradScaler's scale)")

    def take(self):
        """{name: (A, G)}, the means over the step's tokens (and self.rows with rows=True); the sums are cleared,
        the rows and logits stay until clear()."""
        out = {name: (sa / na, sg / ng) for name, (sa, na, sg, ng) in self.sums.items() if na and ng}
        self.sums, self.passes = {}, {}
        if out and world()[1] > 1:  # under DDP: the means of the global batch, on every rank (optim/distributed.py)
            device = self.modules[next(iter(out))].weight.device
            with self.timer('factors', device), self.timer('comm', device):
                self.comm_bytes += average_factors(out)
        for name, (a, g) in out.items():
            if isinstance(a, Rows):
                self.rows[name] = (a.rows, g.rows)  # (M, d_in [+1]), (M, d_out)
                out[name] = (a.value, g.value)
        return out


class Rows:
    """A statistic's value with the rows it came from. FactorCapture adds a step's micro-steps (0 + r, then r + r':
    values add, rows concatenate) and divides by the token count (the value is averaged, the rows stay)."""

    def __init__(self, value, rows):
        self.value, self.rows = value, rows

    def __radd__(self, other):  # 0 + r: the first micro-step
        return self if isinstance(other, int) and other == 0 else NotImplemented

    def __add__(self, other):
        return Rows(self.value + other.value, torch.cat([self.rows, other.rows]))

    def __truediv__(self, n):
        return Rows(self.value / n, self.rows)


class LogitsGrad:
    """s_m = ||dl_m/dz_m||^2 for each token m of the logits z (||p_m - e_(y_m)||^2 for softmax cross-entropy), from a
    tensor hook on the output of the module that produces them, and T, the tokens per sample (z (B, T, C): T;
    z (N, C): 1). It records when and as its capture does: scaling dl_m/dz_m = (M/loss_scale) grad, train mode with
    grad enabled on armed steps, and only while capture.record_grads."""

    def __init__(self, module, capture):
        self.module, self.capture = module, capture
        self.s, self.lengths, self.taken = [], [], None

    @torch.compiler.disable
    def forward_hook(self, module, inputs, output):
        if not (module.training and torch.is_grad_enabled()):
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
                raise RuntimeError(f"the logits of this step came in {len(self.lengths)} passes with tokens per "
                                   f"sample {sorted(set(self.lengths))}; it needs one length")
            self.taken = all_gather_rows(torch.cat(self.s)), self.lengths[0]
        return self.taken

    def clear(self):
        self.s, self.lengths, self.taken = [], [], None


def logits_module(model, name=None):
    """The module named name; None: 'lm_head' if there is one, else the model's last nn.Linear."""
    modules = dict(unwrap(model).named_modules())
    if name is None:
        name = 'lm_head' if 'lm_head' in modules else [n for n, m in modules.items() if isinstance(m, nn.Linear)][-1]
    if name not in modules:
        raise ValueError(f"logits_module {name!r} names no module of the model")
    return modules[name]


def split_layers(model, exclude, max_factor_dim):
    """(name -> nn.Linear to precondition, name -> why not) over the modules that own parameters. A name in
    exclude excludes that module and every layer inside it; one that names no module is an error."""
    modules = dict(model.named_modules())
    if isinstance(exclude, str):
        exclude = [n.strip() for n in exclude.split(',') if n.strip()]
    unknown = [n for n in exclude if n not in modules]
    if unknown:
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise ValueError(f"exclude names no module of the model: {unknown}; its nn.Linear layers: {linears}")
    owners = defaultdict(list)
    for name, m in modules.items():
        for p in m.parameters(recurse=False):
            owners[p].append(name)
    layers, others = {}, {}
    for name, m in modules.items():
        if not any(p.requires_grad for p in m.parameters(recurse=False)):
            continue
        if not isinstance(m, nn.Linear):
            others[name] = type(m).__name__
        elif len(owners[m.weight]) > 1:  # tied weights never get factors: the other use breaks the Kronecker form
            others[name] = 'tied with ' + ', '.join(n for n in owners[m.weight] if n != name)
        elif any(name == e or name.startswith(e + '.') for e in exclude):
            others[name] = 'excluded'
        elif max(m.in_features + (m.bias is not None), m.out_features) > max_factor_dim:
            others[name] = f'wider than max_factor_dim={max_factor_dim}'
        elif not m.weight.requires_grad or (m.bias is not None and not m.bias.requires_grad):
            others[name] = 'partly frozen'
        else:
            layers[name] = m
    return layers, others


def unwrap(model):
    """The module itself under torch.compile's and DDP's wrappers, so layer names are the model's own."""
    while hasattr(model, '_orig_mod') or isinstance(model, nn.parallel.DistributedDataParallel):
        model = model._orig_mod if hasattr(model, '_orig_mod') else model.module
    return model
