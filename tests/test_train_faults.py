"""train.py under faults and bad input: a diverged run never costs the good checkpoint, a resume resumes the same
run, a second run or a fresh start never overwrites a run silently, a crafted file is not executed on load, DDP fails
fast and says why once."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from model import GPT, GPTConfig
from optim import OPTIMIZERS, build_optimizer
import forkrun
from test_train import REPO, TINY, records, run, tiny_data, train, weights  # noqa: F401 (tiny_data: a fixture)


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def eval_good_then(tiny_data, out_dir, optimizer, *args):
    """4 healthy iterations with a checkpoint at iteration 4, then a resume with args."""
    train(tiny_data, out_dir, f'--optimizer={optimizer}', '--max_iters=4', '--eval_interval=4')
    good = weights(out_dir)
    result = train(tiny_data, out_dir, f'--optimizer={optimizer}', '--init_from=resume', *args, check=False)
    return good, result


@pytest.mark.parametrize('optimizer', ['adamw', 'kfac', 'eva', 'fixed_fisher'])
def test_diverged_run_keeps_the_good_checkpoint(tiny_data, tmp_path, optimizer):
    good, result = eval_good_then(tiny_data, tmp_path, optimizer, '--learning_rate=100', '--max_iters=12',
                                  '--eval_interval=4')
    assert result.returncode == 3 and last_line(result).startswith('training diverged:'), result.stderr[-2000:]
    checkpoint = load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))
    assert checkpoint['iter_num'] == 4 and all(torch.equal(good[k], checkpoint['model'][k]) for k in good)
    log = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
    assert log[-1]['kind'] == 'diverged' and log[-1]['reason']


def test_evaluating_every_iteration_never_saves_a_diverged_model(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path, '--learning_rate=100', '--warmup_iters=0', '--max_iters=10',
                   '--eval_interval=1', check=False)
    assert result.returncode == 3 and 'training diverged' in last_line(result)
    if os.path.exists(tmp_path / 'ckpt.pt'):  # saved before it diverged: finite, and within 1 nat of the best
        checkpoint = load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))
        assert all(torch.isfinite(t).all() for t in checkpoint['model'].values())
        assert checkpoint['val_loss'] <= min(r['val_loss'] for r in records(tmp_path, 'eval')) + 1.0


def test_many_skipped_steps_in_a_row_are_a_divergence(tiny_data, tmp_path):
    """The NaN guard skipping every step (here: told every gradient is non-finite) leaves the loss finite and the
    model untrained: after max_skipped_steps in a row the run stops as diverged."""
    args = [*TINY, '--dataset=tiny', f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', '--optimizer=kfac',
            '--max_iters=50', '--eval_interval=50', '--max_skipped_steps=5']
    script = tmp_path / 'train_with_every_gradient_nonfinite.py'
    script.write_text(f"import runpy, sys; sys.path.insert(0, {REPO!r}); import optim.kronecker as k; "
                      "k.KroneckerOptimizer._all_finite = lambda self, new: False; "
                      "sys.argv[0] = 'train.py'; runpy.run_path('train.py', run_name='__main__')\n")
    result = forkrun.run([str(script), *args], cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 3 and '5 steps in a row skipped' in last_line(result), result.stderr[-2000:]
    assert max(r['iter'] for r in records(tmp_path, 'train')) <= 5


@pytest.mark.parametrize('change, message', [
    ('--optimizer=fixed_fisher', "optimizer: checkpoint 'adamw', now 'fixed_fisher'"),
    ('--n_layer=3', 'n_layer: checkpoint 2, now 3'),
    ('--batch_size=8', 'batch_size: checkpoint 4, now 8'),
    ('--dataset=other', "dataset: checkpoint 'tiny', now 'other'"),
])
def test_resume_with_another_runs_config_is_an_error(tiny_data, tmp_path, change, message):
    train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    result = train(tiny_data, tmp_path, '--max_iters=4', '--init_from=resume', change, check=False)
    assert result.returncode == 2 and message in last_line(result), result.stderr[-2000:]
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['iter_num'] == 2


def test_resume_keeps_the_log_up_to_the_checkpoint_and_drops_a_torn_line(tiny_data, tmp_path):
    """A run killed after its checkpoint at iteration 4 left records of iterations 5, 6 and half a line: the resumed
    log is the straight run's, each iteration once."""
    train(tiny_data, tmp_path / 'straight', '--max_iters=8', '--eval_interval=4')
    train(tiny_data, tmp_path / 'resumed', '--max_iters=4', '--eval_interval=4')
    with open(tmp_path / 'resumed' / 'metrics.jsonl', 'a') as f:
        f.write(json.dumps(dict(iter=5, kind='train', loss=9.0)) + '\n' +
                json.dumps(dict(iter=6, kind='train', loss=9.0)) + '\n{"iter": 7, "ki')
    train(tiny_data, tmp_path / 'resumed', '--max_iters=8', '--eval_interval=4', '--init_from=resume')
    straight, resumed = records(tmp_path / 'straight', 'train'), records(tmp_path / 'resumed', 'train')
    assert [r['iter'] for r in resumed] == list(range(1, 9))
    assert [r['loss'] for r in resumed] == [r['loss'] for r in straight]
    assert [r['iter'] for r in records(tmp_path / 'resumed', 'eval')] == [0, 4, 8]


def test_scratch_run_into_a_checkpointed_out_dir_needs_overwrite(tiny_data, tmp_path):
    train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    before = (tmp_path / 'ckpt.pt').read_bytes()
    result = train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2', '--seed=7', check=False)
    assert result.returncode == 2 and '--overwrite=True' in last_line(result)
    assert (tmp_path / 'ckpt.pt').read_bytes() == before
    train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2', '--seed=7', '--overwrite=True')
    assert load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))['config']['seed'] == 7


def test_a_second_process_on_the_same_out_dir_is_refused_and_a_dead_ones_lock_is_taken(tiny_data, tmp_path):
    lock = tmp_path / 'train.lock'
    lock.write_text(json.dumps({'host': os.uname().nodename, 'pid': os.getpid()}))  # alive: this test
    result = train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2', check=False)
    assert result.returncode == 2 and f'in use by process {os.getpid()}' in last_line(result)
    assert not os.path.exists(tmp_path / 'ckpt.pt')
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    lock.write_text(json.dumps({'host': os.uname().nodename, 'pid': dead.pid}))
    result = train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    assert f'taking over {lock} from process {dead.pid}' in result.stdout
    assert not lock.exists()  # released at the end of the run


@pytest.mark.parametrize('args, message', [
    (['--eval_iters=0'], 'bad config value eval_iters=0'),
    (['--warmup_iters=10', '--lr_decay_iters=5'], 'bad config value lr_decay_iters=5 (must be >= warmup_iters=10)'),
    (['--learning_rate=None'], 'bad config value learning_rate=None (only grad_clip takes None'),
    (['--grad_clip=0.0'], 'bad config value grad_clip=0.0 (must be > 0; None turns clipping off)'),
    (['--optimizer=kfac', '--step_rule=quadratic', '--grafting=none', '--grad_clip=1.0'],
     "bad config value grad_clip=1.0 (step_rule='quadratic' needs None"),
])
def test_bad_values_are_errors_naming_them(tiny_data, tmp_path, args, message):
    result = train(tiny_data, tmp_path, '--max_iters=2', *args, check=False)
    assert result.returncode == 2 and message in last_line(result)


def test_warmup_as_long_as_the_decay_then_min_lr(tiny_data, tmp_path):
    train(tiny_data, tmp_path, '--max_iters=6', '--eval_interval=6', '--warmup_iters=3', '--lr_decay_iters=3')
    lrs = [r['lr'] for r in records(tmp_path, 'train')]
    assert lrs[:3] == pytest.approx([1e-2 * k / 4 for k in (1, 2, 3)]) and lrs[3:] == [1e-3] * 3


def test_run_ends_with_a_summary_line(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path, '--max_iters=4', '--eval_interval=2')
    val = records(tmp_path, 'eval')[-1]['val_loss']
    assert result.stdout.strip().splitlines()[-1].startswith(f'done: 4 iterations, final val loss {val:.4f}, best ')
    assert f'{tmp_path}/ckpt.pt (iteration 4)' in result.stdout.strip().splitlines()[-1]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling calls open(marker, 'w'): creates the file
        return open, (self.marker, 'w')


def test_loading_a_crafted_checkpoint_runs_no_code(tiny_data, tmp_path):
    marker = str(tmp_path / 'ran')
    path = str(tmp_path / 'ckpt.pt')
    torch.save(dict(model={}, optimizer={}, model_args={}, iter_num=0, best_val_loss=0.0, config={},
                    payload=RunsCode(marker)), path)
    with pytest.raises(RuntimeError, match='not unpickled'):
        load_checkpoint(path)
    result = train(tiny_data, tmp_path, '--max_iters=2', '--init_from=resume', check=False)
    assert result.returncode != 0 and 'not unpickled' in result.stderr
    assert not os.path.exists(marker)


@pytest.mark.parametrize('name', sorted(OPTIMIZERS))
def test_every_optimizers_checkpoint_loads_without_unpickling_objects(name, tmp_path):
    """What train.py saves (optimizer state after steps that update factors and decompositions, RNG states, the
    config) loads with weights_only=True and restores the same state."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8, bias=True))
    opt = build_optimizer(name, model, lr=1e-3)
    for step in range(3):
        X = torch.randint(0, 11, (2, 8))
        _, loss = model(X, X)
        loss.backward()
        opt.step()
        opt.zero_grad()
    path = str(tmp_path / 'ckpt.pt')
    save_checkpoint(dict(model=model.state_dict(), optimizer=opt.state_dict(), model_args={}, iter_num=3,
                         best_val_loss=1.0, config=dict(optimizer=name, kl_clip=None),
                         rng_states=[{'torch': torch.get_rng_state(), 'cuda': None}], train_time_s=1.0), path)
    loaded = load_checkpoint(path)
    opt2 = build_optimizer(name, model, lr=1e-3)
    opt2.load_state_dict(loaded['optimizer'])
    assert json.dumps(loaded['config']) and torch.equal(loaded['rng_states'][0]['torch'], torch.get_rng_state())


def test_torchrun_config_error_is_said_once_by_rank_zero(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path, '--max_iters=2', '--gradient_accumulation_steps=3', torchrun=2, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    said = [line for line in lines if line.startswith('train.py: config error:')]
    assert result.returncode != 0 and len(said) == 1, lines[-40:]
    assert 'gradient_accumulation_steps=3 is not a multiple of the 2 ranks' in said[0]
    assert not any('Traceback' in line for line in lines[:lines.index(said[0])])  # no rank's traceback before it
    assert any(line.strip() == 'traceback : ' + said[0] for line in lines)  # torchrun's report: the root cause


def test_train_docstrings_torchrun_example_runs(tmp_path):
    """The torchrun line of train.py's docstring (README's too), as written, for 2 iterations on the tiny
    Shakespeare of the mirror."""
    mirror = os.environ.get('NANOFISHER_DATA_MIRROR') or os.path.join(REPO, '..', 'shared', 'data')
    if not os.path.isfile(os.path.join(mirror, 'tinyshakespeare.txt')):
        pytest.skip(f"no data mirror at {mirror}")
    doc = open(os.path.join(REPO, 'train.py')).read().split('"""')[1]
    example = next(line for line in doc.splitlines() if line.startswith('$ torchrun')).split()[2:]
    assert example[:3] == ['--standalone', '--nproc_per_node=2', 'train.py']
    assert ' '.join(['torchrun', *example]) in open(os.path.join(REPO, 'README.md')).read()  # README's, the same
    result = run('train.py', *example[3:], '--max_iters=2', '--eval_interval=2', '--eval_iters=2',
                 f'--data_dir={tmp_path / "data"}', f'--out_dir={tmp_path / "out"}', torchrun=2,
                 env={'NANOFISHER_DATA_MIRROR': mirror})
    assert 'tokens per iteration: 768 (1 micro-steps x 2 ranks x 6 sequences x 64 tokens)' in result.stdout


def children(pid):
    out = []
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/stat') as f:
                if entry.isdigit() and int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
                    out.append(int(entry))
        except (OSError, ValueError, IndexError):
            pass
    return out


def test_a_stalled_rank_stops_the_run_naming_it(tiny_data, tmp_path):
    """Rank 1 stopped (SIGSTOP) mid-run: rank 0 gives up after ddp_timeout_s and names rank 1, not in 30 minutes."""
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
               os.path.join(REPO, 'train.py'), *TINY, '--dataset=tiny', f'--data_dir={tiny_data}',
               f'--out_dir={tmp_path}', '--max_iters=100000', '--eval_interval=100000', '--ddp_timeout_s=5']
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                env={**os.environ, 'OMP_NUM_THREADS': '1'})
    stopped = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(tmp_path / 'metrics.jsonl') and
                                              len(open(tmp_path / 'metrics.jsonl').readlines()) > 3):
            time.sleep(0.2)
        for pid in children(launcher.pid):
            if b'RANK=1\x00' in open(f'/proc/{pid}/environ', 'rb').read():
                stopped = pid
        assert stopped is not None
        t0 = time.time()
        os.kill(stopped, signal.SIGSTOP)
        said = 'rank 0: a collective timed out after ddp_timeout_s=5; rank(s) 1 did not answer'
        output = ''
        for line in launcher.stdout:  # until rank 0 says it (then torchrun need not wait out the stopped rank)
            output += line
            if said in line or time.time() - t0 > 60:
                break
        assert time.time() - t0 < 60
        os.kill(stopped, signal.SIGKILL)
        output += launcher.communicate(timeout=90)[0]
    finally:
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.kill()
    assert launcher.returncode != 0
    assert said in output, output[-3000:]


def test_eval_only_resume_changes_neither_log_nor_config(tiny_data, tmp_path):
    """Evaluating a checkpoint (always_save_checkpoint=False keeps the best, often before the last iteration) appends
    its evaluation and keeps the records logged after the checkpoint and config.json."""
    train(tiny_data, tmp_path, '--max_iters=4', '--eval_interval=4')
    with open(tmp_path / 'metrics.jsonl', 'a') as f:
        f.write(json.dumps(dict(iter=5, kind='train', loss=2.0)) + '\n')
    config = (tmp_path / 'config.json').read_text()
    train(tiny_data, tmp_path, '--init_from=resume', '--eval_only=True')
    log = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
    assert [r['iter'] for r in log if r['kind'] == 'train'][-1] == 5 and log[-1]['kind'] == 'eval'
    assert (tmp_path / 'config.json').read_text() == config


def test_overwrite_removes_the_previous_runs_checkpoint(tiny_data, tmp_path):
    """--overwrite=True: a new run that diverges before its first save leaves no checkpoint of the old run to be
    resumed or reported as kept."""
    train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    result = train(tiny_data, tmp_path, '--overwrite=True', '--learning_rate=100', '--warmup_iters=0',
                   '--max_iters=20', '--eval_interval=20', check=False)
    assert result.returncode == 3 and 'no checkpoint was written' in last_line(result)
    assert not os.path.exists(tmp_path / 'ckpt.pt')


def test_resume_compares_a_key_an_older_checkpoint_lacks_with_its_default(tiny_data, tmp_path):
    train(tiny_data, tmp_path, '--optimizer=fixed_fisher', '--max_iters=2', '--eval_interval=2')
    path = str(tmp_path / 'ckpt.pt')
    checkpoint = load_checkpoint(path)
    del checkpoint['config']['cross_terms']  # as written before cross_terms existed (it ran at 0.0)
    save_checkpoint(checkpoint, path)
    result = train(tiny_data, tmp_path, '--optimizer=fixed_fisher', '--init_from=resume', '--max_iters=4',
                   '--cross_terms=0.5', check=False)
    assert result.returncode == 2 and 'cross_terms: checkpoint 0.0, now 0.5' in last_line(result)
    train(tiny_data, tmp_path, '--optimizer=fixed_fisher', '--init_from=resume', '--max_iters=4')
