"""
Kronecker optimizers under DDP (torchrun): plain torch.distributed calls, used by optim/kronecker.py when a process
group of more than one rank is initialised. DDP itself all-reduces the gradients; this module adds, following KAISA
(Pauloski et al., 2021, "KAISA: An Adaptive Second-Order Optimizer Framework for Deep Neural Networks", SC'21):

- factors: on factor-update steps FactorCapture.take() averages each rank's factors (token means over its
  micro-batches; EVA's vectors) over ranks with one all-reduce of their concatenation (in buckets of at most
  BUCKET_BYTES). Ranks see equal token counts, so the mean over ranks is the factor of the global batch. A statistic
  that keeps its per-token rows (optim/capture.py) also has them all-gathered, so that what a method computes from the
  rows is the global batch's too. Other steps communicate nothing.
- decompositions: each layer is owned by one rank, assigned greedily (largest cost first, to the least-loaded rank)
  by the cost sum d^3 over its factors' sizes. Only the owner runs update_decomposition / refresh_decomposition;
  then, by distribute:
    'decomposition' (KAISA's COMM-OPT): the owner broadcasts what the call wrote into the layer's state (inverses,
        eigenbases, eigenvalues), on inverse-update (and refresh) steps only; every rank preconditions every layer.
    'gradient' (MEM-OPT): only the owner holds the decomposition; each step it preconditions the layer's gradient
        and broadcasts U. Less memory, a broadcast of every preconditioned gradient on every step.
    'none': every rank computes every decomposition; only the factors are all-reduced.
  Broadcasts are bucketed per owner: one call per owner and bucket.

What a decomposition wrote is found by looking (the layer state's entries that are new or changed, tensors compared
by identity and version counter), so a method needs no list of its keys; the owners then tell the other ranks the
keys, shapes, strides and dtypes (one small all_gather_object) before broadcasting the tensors. In 'gradient' mode
a checkpoint needs the layers other ranks own: consolidate() sends them to rank 0 (KroneckerOptimizer's
consolidate_state_dict(), called on every rank, as for torch's ZeroRedundancyOptimizer).
"""

import pickle
import time

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 64 * 2**20  # the largest flat buffer a collective sends (one bigger tensor goes alone)
MODES = ('decomposition', 'gradient', 'none')


def world():
    """(rank, world size) of the default process group; (0, 1) where none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def leave_process_group():
    """Destroys the default process group, then gives gloo's worker threads the GIL for a moment: each frees its last
    collective's tensors after the collective has returned, which takes the GIL, and a worker that asks for it once
    the interpreter is finalizing aborts the process (SIGABRT, 'terminate called without an active exception')."""
    dist.destroy_process_group()
    time.sleep(0.5)  # the GIL released: the workers free their finished collectives before the interpreter ends


def assign(costs, world_size):
    """{name: rank}: greedy, largest cost first (layer order among equal costs) to the least-loaded rank (the
    lowest among equal loads). Deterministic: every rank computes the same assignment."""
    loads, owner = [0] * world_size, {}
    for name in sorted(costs, key=lambda n: -costs[n]):  # sorted() is stable
        rank = min(range(world_size), key=lambda r: loads[r])
        owner[name] = rank
        loads[rank] += costs[name]
    return owner


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


def buckets(tensors):
    """Consecutive runs of tensors of one dtype and device, each at most BUCKET_BYTES (or a single bigger tensor)."""
    out = []
    for t in tensors:
        last = out[-1] if out else None
        if last and last[0].dtype == t.dtype and last[0].device == t.device and \
                nbytes(last) + nbytes([t]) <= BUCKET_BYTES:
            last.append(t)
        else:
            out.append([t])
    return out


def all_reduce_mean(tensors):
    """Replaces each tensor by its mean over ranks, one all-reduce per bucket; returns the bytes all-reduced."""
    _, world_size = world()
    for bucket in buckets(tensors):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat /= world_size
        for t, mean in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            t.copy_(mean)
    return nbytes(tensors)


def mean_over_ranks(total, count):
    """total / count, then its mean over DDP's ranks (each rank's own count): sums of per-batch terms -> their mean."""
    total = total / count
    if world()[1] > 1:
        torch.distributed.all_reduce(total)
        total /= world()[1]
    return total


def all_gather_rows(x):
    """The rows (dim 0) of x of every rank, concatenated in rank order (the same number of rows on every rank)."""
    rank, world_size = world()
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def average_factors(factors):
    """{name: (A, G)} of this rank's tokens -> of all ranks' tokens, in place (the same layers on every rank): the
    means averaged by one bucketed all-reduce; a statistic with rows (.value, .rows: optim/capture.py) has its value
    averaged and its rows all-gathered. Returns the bytes communicated."""
    stats = [f for name in sorted(factors) for f in factors[name]]
    sent = all_reduce_mean([f.value if hasattr(f, 'rows') else f for f in stats])
    for f in stats:
        if hasattr(f, 'rows'):
            f.rows = all_gather_rows(f.rows)
            sent += nbytes([f.rows])
    return sent


def broadcast(tensors, src):
    """Rank src's tensors into the same-shaped buffers of the other ranks, one broadcast per bucket; returns the
    bytes broadcast."""
    rank, _ = world()
    for bucket in buckets(tensors):
        flat = _flatten_dense_tensors(bucket) if rank == src else \
            torch.empty(sum(t.numel() for t in bucket), dtype=bucket[0].dtype, device=bucket[0].device)
        dist.broadcast(flat, src)
        if rank != src:
            for t, value in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                t.copy_(value)
    return nbytes(tensors)


class Ranks:
    """The distributed part of a KroneckerOptimizer beside the factor averaging: the owner of each layer, the spreading
    of the decompositions (or of the preconditioned gradients), and the bytes it communicated (comm_bytes)."""

    def __init__(self, opt, mode, has_decomposition):
        self.rank, self.world_size = world()
        self.has_decomposition = has_decomposition
        self.device = next(iter(opt.modules_.values())).weight.device if opt.modules_ else torch.device('cpu')
        costs = {name: (m.in_features + (m.bias is not None)) ** 3 + m.out_features ** 3
                 for name, m in opt.modules_.items()}  # d^3 of A plus d^3 of G
        self.owner = assign(costs, self.world_size)
        self.comm_bytes = 0
        self.set_mode(opt, mode)
        if self.rank == 0:
            what = type(opt).__name__
            print(f"{what}: {self.world_size} ranks: factors all-reduced on factor-update steps")
            if has_decomposition:
                total = sum(costs.values()) or 1
                for r in range(self.world_size):
                    mine = [n for n in opt.modules_ if self.owner[n] == r]
                    share = sum(costs[n] for n in mine) / total
                    print(f"{what}: rank {r} owns {len(mine)} layers ({100 * share:.1f}% of sum d^3): "
                          f"{', '.join(mine)}")

    def set_mode(self, opt, mode):
        self.mode = mode if self.has_decomposition else 'none'  # EVA: nothing to spread
        if self.rank == 0 and self.has_decomposition:
            say = {'decomposition': 'owners compute decompositions and broadcast them',
                   'gradient': 'owners compute decompositions and broadcast preconditioned gradients',
                   'none': 'every rank computes every decomposition'}[mode]
            print(f"{type(opt).__name__}: distribute={mode!r}: {say}")

    def owns(self, name):
        return self.mode == 'none' or self.owner[name] == self.rank

    def decompose(self, opt, full, refresh):
        """update_decomposition on the owned layers of full, refresh_decomposition on those of refresh (the same
        lists on every rank); in 'decomposition' mode then every rank gets what the owners wrote."""
        mine = []  # (name, keys written) of the layers decomposed here
        for name in full + refresh:
            if not self.owns(name):
                continue
            st = opt.layer_state[name]
            before = {k: (v, v._version if torch.is_tensor(v) else None) for k, v in st.items()}
            if name in full:
                opt.update_decomposition(st)
                opt.decompositions += 1
            else:
                opt.refresh_decomposition(st)
            mine.append((name, [k for k, v in st.items() if k not in before or before[k][0] is not v or
                                (torch.is_tensor(v) and before[k][1] != v._version)]))  # new or changed
            del before  # the replaced tensors
        if self.mode != 'decomposition':
            return
        with opt.timer('comm', self.device):
            for src, meta in enumerate(self.share_meta(opt, mine)):
                tensors = []
                for name, specs, values in meta:
                    st = opt.layer_state[name]
                    st.update(values)
                    for key, shape, stride, dtype in specs:
                        if src != self.rank:
                            st[key] = torch.empty_strided(shape, stride, dtype=dtype, device=self.device)
                        tensors.append(st[key])
                if tensors:
                    self.comm_bytes += broadcast(tensors, src)

    def share_meta(self, opt, mine):
        """[(name, keys)] of layer states written here -> for every rank, [(name, [(key, shape, stride, dtype)],
        {key: value})]: its tensors described, its other values as they are (one all_gather_object). Receivers
        allocate with the writer's strides (LAPACK's results are column-major): the same layout keeps later matmuls,
        and so the weights of all ranks, bitwise equal."""
        meta = []
        for name, keys in mine:
            st = opt.layer_state[name]
            tensors = [k for k in keys if torch.is_tensor(st[k])]
            meta.append((name, [(k, st[k].shape, st[k].stride(), st[k].dtype) for k in tensors],
                         {k: st[k] for k in keys if k not in tensors}))
        metas = [None] * self.world_size
        dist.all_gather_object(metas, meta)
        self.comm_bytes += len(pickle.dumps(meta)) * self.world_size  # about what all_gather_object sends
        return metas

    def consolidate(self, opt):
        """'gradient' mode, on every rank: rank 0 receives, point to point, the whole state of each layer that another
        rank owns (its decomposition and whatever precondition keeps). Returns {name: state} on rank 0, {} on the
        others."""
        mine = [(n, list(opt.layer_state[n])) for n in opt.modules_ if self.owner[n] == self.rank != 0]
        out = {}
        for src, meta in enumerate(self.share_meta(opt, mine)):
            if src == 0 or self.rank not in (0, src):
                continue
            tensors = []
            for name, specs, values in meta:
                st = opt.layer_state[name]
                if self.rank == 0:
                    st = out[name] = dict(values)
                    for key, shape, stride, dtype in specs:
                        st[key] = torch.empty_strided(shape, stride, dtype=dtype, device=self.device)
                tensors += [st[key] for key, *_ in specs]
            for bucket in buckets(tensors):
                if self.rank == src:
                    dist.send(_flatten_dense_tensors(bucket), 0)
                else:
                    flat = torch.empty(sum(t.numel() for t in bucket), dtype=bucket[0].dtype, device=self.device)
                    dist.recv(flat, src)
                    for t, value in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
                        t.copy_(value)
            self.comm_bytes += nbytes(tensors)
        return out

    def saved_layers(self, opt, layers, theirs):
        """'gradient' mode, state_dict(): the layers other ranks own from consolidate()'s theirs, else without
        their decompositions (a resume recomputes them)."""
        for name in layers:
            if self.owns(name):
                continue
            if theirs and name in theirs:
                layers[name] = theirs[name]
            else:  # its decomposition stays with its owner
                layers[name].pop('decomposed', None)
        if theirs is None:
            print(f"{type(opt).__name__}: state_dict() without consolidate_state_dict() on every rank first: the "
                  "layers of other ranks are saved without their decompositions (a resume recomputes them)")
        return layers

    def loaded_layer(self, opt, st):
        """'gradient' mode, load_state_dict(): another rank decomposes and preconditions this layer; keep what
        step() uses here."""
        keep = opt.factor_names + ('momentum_buffer', 'exp_avg', 'exp_avg_sq', 'decomposed', 'qm_update')
        return {k: v for k, v in st.items() if k in keep}

    def precondition(self, opt, active):
        """[U] for active [(group, st, V)]: every rank computes all in 'decomposition' and 'none' modes; in
        'gradient' mode each owner computes its layers' U and broadcasts them."""
        if self.mode != 'gradient':
            return [opt.precondition(st, V) for _, st, V in active]
        # contiguous on every rank: the same layout gives the same sums (KL clip) on every rank
        Us = [opt.precondition(st, V).to(V.dtype).contiguous() if self.owns(g['name']) else
              torch.empty(V.shape, dtype=V.dtype, device=V.device)
              for g, st, V in active]
        with opt.timer('comm', self.device):
            for src in range(self.world_size):
                sent = [U for (g, _, _), U in zip(active, Us) if self.owner[g['name']] == src]
                if sent:
                    self.comm_bytes += broadcast(sent, src)
        return Us
