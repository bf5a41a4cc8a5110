"""
Every optimizer under DDP (optim/distributed.py), on CPU with gloo: 2 ranks x B sequences give the same losses,
factors and weights as 1 process x 2B; each layer's decomposition runs on exactly one rank, its owner; all ranks end
with the same preconditioner; a checkpoint written by 2 ranks resumes on 1.
"""

from contextlib import nullcontext
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import test_train
from model import GPT, GPTConfig
from optim import OPTIMIZERS, build_optimizer, optimizer_kwargs
from optim.distributed import assign, leave_process_group
from test_train import records, train

tiny_data = test_train.tiny_data  # test_train's fixture, for the train.py test here

WORLD, MICRO, STEPS = 2, 2, 5  # ranks, micro-steps per step (no_sync on the first), steps
KRON = dict(lr=0.05, momentum=0.9, weight_decay=0.1, kl_clip=1e-2, factor_decay=0.8, factor_update_freq=2,
            inv_update_freq=3, damping=1e-2)  # factor updates at steps 0, 2, 4; decompositions at 0, 3
RUNS = {  # id: (optimizer, kwargs, distribute)
    'adamw': ('adamw', dict(lr=0.01), None),
    'kfac': ('kfac', KRON, 'decomposition'),
    'eva': ('eva', KRON, 'decomposition'),
    'fixed_fisher': ('fixed_fisher', KRON, 'decomposition'),
    'fixed_fisher-qr': ('fixed_fisher', dict(KRON, eigen_refresh='qr'), 'decomposition'),
    'kfac-gradient': ('kfac', KRON, 'gradient'),
    'fixed_fisher-gradient': ('fixed_fisher', KRON, 'gradient'),
    'fixed_fisher-none': ('fixed_fisher', KRON, 'none'),
    'fixed_fisher-lm': ('fixed_fisher', dict(KRON, damping_schedule='lm', damping_update_freq=2), 'decomposition'),
    'kfac-quadratic': ('kfac', dict(KRON, kl_clip=None, step_rule='quadratic'), 'decomposition'),  # forms averaged
    'kfac-mg': ('kfac', dict(KRON, kl_clip=None, step_rule='quadratic', damping_schedule='lm', damping_update_freq=2),
                'decomposition'),  # rho from the quadratic model's prediction, its losses averaged
}
SAMPLED = ('fixed_fisher', dict(KRON, fisher='sampled'), 'decomposition')  # labels drawn per rank: no reference
EVERY = {name: (name, optimizer_kwargs(name, KRON), 'decomposition' if hasattr(cls, 'update_decomposition') else None)
         for name, cls in OPTIMIZERS.items()}  # each optimizer of optim/ as registered, with its own defaults


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=2, n_head=2, n_embd=8)).double()


def batches(step, micro, ranks):
    """The micro-batches of these ranks, concatenated: 2 sequences of 6 tokens per rank."""
    g = [torch.Generator().manual_seed(1000 * step + 10 * micro + r) for r in ranks]
    X = torch.cat([torch.randint(0, 13, (2, 6), generator=gen) for gen in g])
    Y = torch.cat([torch.randint(0, 13, (2, 6), generator=gen) for gen in g])
    return X, Y


def train_step(net, opt, step, rank=0, world=1):
    """One step as train.py takes it (MICRO micro-steps, no_sync on all but the last); the mean loss. World 1 takes
    the micro-batches of all WORLD ranks at once."""
    loss_sum = 0.0
    for micro in range(MICRO):
        X, Y = batches(step, micro, [rank] if world > 1 else range(WORLD))
        with net.no_sync() if world > 1 and micro < MICRO - 1 else nullcontext():
            logits, loss = net(X, Y)
            if hasattr(opt, 'backward'):
                opt.backward(loss / MICRO, logits, 1 / MICRO)
            else:
                (loss / MICRO).backward()
        loss_sum += loss.item() / MICRO
    if getattr(opt, 'needs_batches', False):  # step_rule='quadratic': each rank's micro-batches, as train.py
        opt.set_quadratic_batches(net, [batches(step, micro, [rank] if world > 1 else range(WORLD))
                                        for micro in range(MICRO)])
    opt.step()
    if getattr(opt, 'lm_pending', False):  # damping_schedule='lm': each rank's ratio terms, averaged over ranks
        opt.adapt_damping(net, [batches(step, micro, [rank] if world > 1 else range(WORLD)) for micro in range(MICRO)])
    opt.zero_grad(set_to_none=True)
    return loss_sum


def run(name, kwargs, distribute, rank=0, world=1):
    """STEPS steps from tiny_gpt()'s initial weights."""
    model = tiny_gpt()
    opt = build_optimizer(name, model, **kwargs)
    calls = []  # (step, layer) of each update_decomposition on this rank
    if distribute is not None:
        opt.distribute = distribute
        names, real = {id(st): n for n, st in opt.layer_state.items()}, opt.update_decomposition
        opt.update_decomposition = lambda st: (calls.append((opt.steps, names[id(st)])), real(st))[1]
    net = DDP(model) if world > 1 else model
    losses = [train_step(net, opt, step, rank, world) for step in range(STEPS)]
    out = dict(losses=losses, weights=model.state_dict(), calls=calls)
    if distribute is not None:
        opt.consolidate_state_dict()  # on every rank, as train.py's save()
        out.update(factors=opt.factors(), layer_state=opt.layer_state, diagnostics=opt.diagnostics(),
                   owner=opt.ranks.owner if opt.ranks else None, state_dict=opt.state_dict())
    return out


def worker(rank, world, folder):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{folder}/store', rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))  # a collective one rank misses fails instead of hanging
    results = {run_id: run(*args, rank, world) for run_id, args in RUNS.items()}
    results['sampled'] = run(*SAMPLED, rank, world)
    for name, args in EVERY.items():
        try:
            results['every-' + name] = run(*args, rank, world)
        except Exception as e:  # reported by the test of that optimizer
            results['every-' + name] = f'{type(e).__name__}: {e}'
    torch.save(results, f'{folder}/rank{rank}.pt')
    leave_process_group()


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    """What each of the 2 ranks ended with, one spawn for all runs."""
    folder = tmp_path_factory.mktemp('ddp')
    mp.spawn(worker, args=(WORLD, str(folder)), nprocs=WORLD)
    return [torch.load(folder / f'rank{r}.pt', weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope='module')
def one():
    return {run_id: run(*args) for run_id, args in RUNS.items()}


@pytest.mark.parametrize('run_id', list(RUNS))
def test_two_ranks_match_one_process_with_twice_the_batch(run_id, ranks, one):
    ref = one[run_id]
    np.testing.assert_allclose(np.mean([r[run_id]['losses'] for r in ranks], axis=0), ref['losses'], rtol=1e-10)
    for r in ranks:
        for k, w in ref['weights'].items():
            torch.testing.assert_close(r[run_id]['weights'][k], w, rtol=1e-8, atol=1e-10, msg=lambda m: f'{k}: {m}')
        for n, (A, G) in ref.get('factors', {}).items():
            torch.testing.assert_close(r[run_id]['factors'][n][0], A, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(r[run_id]['factors'][n][1], G, rtol=1e-10, atol=1e-12)


def test_levenberg_marquardt_lambda_of_two_ranks_is_one_processes(ranks, one):
    """The reduction ratio's terms are averaged over ranks: lambda moves on both ranks as in one process."""
    ref = one['fixed_fisher-lm']['diagnostics']
    assert ref['damping'] != KRON['damping']  # it moved
    for r in ranks:
        mine = r['fixed_fisher-lm']['diagnostics']
        assert mine['damping'] == pytest.approx(ref['damping'], rel=1e-12)
        assert mine['lm_ratio'] == pytest.approx(ref['lm_ratio'], rel=1e-6)  # h(theta+d) - h(theta): cancellation


@pytest.mark.parametrize('run_id', ['kfac', 'fixed_fisher', 'fixed_fisher-qr', 'kfac-gradient',
                                    'fixed_fisher-gradient'])
def test_each_decomposition_runs_on_its_owner_only(run_id, ranks, one):
    owner = ranks[0][run_id]['owner']
    assert owner == ranks[1][run_id]['owner'] and set(owner.values()) == {0, 1}
    calls = [c for r in ranks for c in r[run_id]['calls']]
    assert sorted(calls) == sorted(one[run_id]['calls'])  # each (step, layer) once over the ranks, as in 1 process
    assert {step for step, _ in calls} == {0, 3}
    for rank, r in enumerate(ranks):
        assert all(owner[layer] == rank for _, layer in r[run_id]['calls'])
        assert r[run_id]['diagnostics']['decompositions'] == len(r[run_id]['calls'])
        assert r[run_id]['diagnostics']['comm_mb'] > 0


@pytest.mark.parametrize('run_id', ['kfac', 'fixed_fisher', 'fixed_fisher-qr', 'fixed_fisher-none', 'sampled'])
def test_ranks_end_with_the_same_preconditioner(run_id, ranks):
    a, b = ranks[0][run_id]['layer_state'], ranks[1][run_id]['layer_state']
    for n in a:
        assert a[n].keys() == b[n].keys(), n
        for k, v in a[n].items():
            assert torch.equal(v, b[n][k]) if torch.is_tensor(v) else v == b[n][k], f'{n}.{k}'
    for k, w in ranks[0][run_id]['weights'].items():
        assert torch.equal(w, ranks[1][run_id]['weights'][k]), k
    assert all(np.isfinite(ranks[0][run_id]['losses']))


@pytest.mark.parametrize('run_id', ['kfac-gradient', 'fixed_fisher-gradient'])
def test_gradient_mode_keeps_each_decomposition_on_its_owner(run_id, ranks, one):
    r0 = ranks[0][run_id]
    for n, st in r0['layer_state'].items():
        assert (len(st) > 5) == (r0['owner'][n] == 0), n  # A, G, momentum_buffer, decomposed, damping_eff elsewhere
    # consolidate_state_dict() on every rank, then rank 0's state_dict() holds every layer's state, as 1 process's
    saved, ref = r0['state_dict']['kronecker']['layers'], one[run_id]['state_dict']['kronecker']['layers']
    for n, st in ref.items():
        assert saved[n].keys() == st.keys(), n
        for k, v in st.items():
            torch.testing.assert_close(saved[n][k], v, rtol=1e-6, atol=1e-8, msg=lambda m: f'{n}.{k}: {m}')


@pytest.mark.parametrize('name', list(OPTIMIZERS))
def test_every_optimizer_trains_on_two_ranks_that_stay_equal(name, ranks):
    a, b = ranks[0]['every-' + name], ranks[1]['every-' + name]
    assert not isinstance(a, str), a
    assert all(np.isfinite(a['losses'])) and all(np.isfinite(b['losses']))
    for k, w in a['weights'].items():
        assert torch.equal(w, b['weights'][k]), k


def test_assignment_is_greedy_by_cost_and_deterministic():
    costs = {'a': 3, 'b': 8, 'c': 4, 'd': 5, 'e': 4}
    assert assign(costs, 2) == {'b': 0, 'd': 1, 'c': 1, 'e': 0, 'a': 1}  # loads 12 and 12
    assert assign(costs, 1) == dict.fromkeys(costs, 0)


def test_unknown_distribute_is_a_clear_error():
    opt = build_optimizer('kfac', tiny_gpt())
    with pytest.raises(ValueError, match='distribute'):
        opt.distribute = 'layers'


@pytest.mark.parametrize('run_id', ['kfac', 'fixed_fisher-gradient'])
def test_state_of_two_ranks_resumes_on_one_process(run_id, ranks, one):
    """Rank 0's weights and state_dict() after STEPS steps on 2 ranks continue on 1 process (2 more steps: one on
    the saved decompositions, one that decomposes) as 1 process's own do."""
    name, kwargs, _ = RUNS[run_id]
    out = []
    for saved in (ranks[0][run_id], one[run_id]):
        model = tiny_gpt()
        model.load_state_dict(saved['weights'])
        opt = build_optimizer(name, model, **kwargs)
        opt.load_state_dict(saved['state_dict'])
        out.append(([train_step(model, opt, step) for step in range(STEPS, STEPS + 2)], model.state_dict()))
    (losses, resumed), (ref_losses, ref) = out
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10)
    for k, w in ref.items():
        torch.testing.assert_close(resumed[k], w, rtol=1e-8, atol=1e-10, msg=lambda m: f'{k}: {m}')


def test_train_py_checkpoint_of_two_ranks_resumes_on_one(tiny_data, tmp_path):
    """train.py: kfac on 2 ranks with distribute='gradient' writes a checkpoint that holds every layer's inverses
    (gathered from their owners), and 1 process resumes from it."""
    common = ['--optimizer=kfac', '--factor_update_freq=1', '--inv_update_freq=2', '--eval_interval=2',
              '--distribute=gradient']
    train(tiny_data, tmp_path, '--max_iters=2', *common, torchrun=2)
    layers = torch.load(tmp_path / 'ckpt.pt', weights_only=False)['optimizer']['kronecker']['layers']
    assert len(layers) == 8 and all({'A_inv', 'G_inv', 'decomposed'} <= st.keys() for st in layers.values())
    result = train(tiny_data, tmp_path, '--max_iters=3', '--init_from=resume', *common)
    assert 'RNG states of 2 ranks' in result.stdout
    steps = records(tmp_path, 'train')
    assert [r['iter'] for r in steps] == [1, 2, 3] and steps[0]['comm_mb'] > 0 and 'comm_mb' not in steps[-1]
    assert np.isfinite(steps[-1]['loss'])
