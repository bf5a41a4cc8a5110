"""
The factor capture every Kronecker-factored optimizer shares: FactorCapture, hooks on nn.Linear layers that sum the
statistics of their inputs and output gradients over the tokens of one optimizer step, and which layers get them
(split_layers). optim/kronecker.py's KroneckerOptimizer owns one.

Conventions (DESIGN.md), for a layer y = W x + b with W (d_out, d_in):
    a = [x; 1] with a bias, else x;   V = [dL/dW | dL/db] (d_out, d_in + 1): the bias gradient is the last column
    M = tokens of the micro-batch (B*T), L = (1/M) sum_m l_m, g_hat_m = M * dL/dy_m = dl_m/dy_m
    A = (1/M) sum_m a_m a_m^T,  G = (1/M) sum_m g_hat_m g_hat_m^T   (tokens are samples: the "expand" setting)
    F ~ A (x) G, and (A (x) G)^-1 vec(V) = vec(G^-1 V A^-1), vec stacking columns
"""

import time
from collections import defaultdict
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn as nn

from optim.distributed import average_factors, world


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
    """

    def __init__(self, modules, statistic, dtypes):
        self.modules, self.statistic, self.dtypes = modules, statistic, dtypes  # name -> nn.Linear / fn / dtype
        self.loss_scale, self.record_grads = 1.0, True
        self.timer = Timer()
        self.handles, self.sums, self.passes = [], {}, {}
        self.comm_bytes = 0  # under DDP: bytes averaged over ranks by take()

    @property
    def armed(self):
        return bool(self.handles)

    def arm(self):
        if not self.handles:
            self.handles = [m.register_forward_hook(partial(self._forward_hook, name))
                            for name, m in self.modules.items()]

    def disarm(self):
        for h in self.handles:
            h.remove()
        self.handles = []
        self.clear()

    def clear(self):
        self.sums, self.passes = {}, {}

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
            x = inputs[0].detach().reshape(-1, module.in_features).to(self.dtypes[name])  # (M, d_in)
            if module.bias is not None:
                x = torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)  # a = [x; 1]
            self._add(name, 0, self.statistic(x), x.shape[0])
        # For inputs that are not 2-D, F.linear returns a view of its (M, d_out) matmul, and an in-place op on that
        # view (ReLU(inplace=True)) drops the view's hooks; the base's survive and see the gradient before it.
        base = output._base
        (base if base is not None and base.numel() == output.numel() else output).register_hook(
            partial(self._grad_hook, name))

    def _grad_hook(self, name, grad):
        if not self.record_grads:
            return
        with self.timer('factors', grad.device), torch.no_grad(), torch.autocast(grad.device.type, enabled=False):
            g = grad.detach().reshape(-1, grad.shape[-1]).to(self.dtypes[name])  # (M, d_out)
            g = g * (g.shape[0] / self.loss_scale)  # g_hat = M dL/dy
            self._add(name, 1, self.statistic(g), g.shape[0])

    def take(self):
        out = {name: (sa / na, sg / ng) for name, (sa, na, sg, ng) in self.sums.items() if na and ng}
        self.clear()
        if out and world()[1] > 1:  # under DDP: the means of the global batch, on every rank (optim/distributed.py)
            device = self.modules[next(iter(out))].weight.device
            with self.timer('factors', device), self.timer('comm', device):
                self.comm_bytes += average_factors(out)
        return out


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
