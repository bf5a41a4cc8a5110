"""train.py and sample.py end to end on CPU, on a tiny synthetic character set made here."""
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint, save_checkpoint
from data.common import write_meta
import forkrun

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = os.environ.get('NANOFISHER_DATA_MIRROR') or os.path.join(REPO, '..', 'shared', 'data')
TINY = ['--device=cpu', '--compile=False', '--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16',
        '--batch_size=4', '--gradient_accumulation_steps=2', '--eval_iters=4', '--log_interval=1',
        '--learning_rate=1e-2', '--warmup_iters=2', '--lr_decay_iters=20', '--min_lr=1e-3', '--bias=True']


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """Noisy repetitions of a 12-symbol pattern over a 16-symbol vocabulary: easy to learn, not trivial."""
    folder = tmp_path_factory.mktemp('tiny_data')
    rng = np.random.default_rng(0)
    for split, n in [('train', 20000), ('val', 2000)]:
        tokens = np.tile(np.arange(12), n // 12 + 1)[:n]
        noise = rng.random(n) < 0.1
        tokens[noise] = rng.integers(0, 16, noise.sum())
        tokens.astype(np.uint16).tofile(folder / f'{split}.bin')
    write_meta(folder, [chr(ord('a') + i) for i in range(16)])
    return folder


def run(script, *args, check=True, torchrun=0, env=None):
    """`python script args` (or under torchrun with that many ranks): a fresh process, forked from one that has
    imported torch already unless it is torchrun's (tests/forkrun.py)."""
    command = [os.path.join(REPO, script), *args]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    if torchrun:
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={torchrun}',
                   *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    else:
        result = forkrun.run(command, cwd=REPO, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def train(tiny_data, out_dir, *args, **kwargs):
    return run('train.py', *TINY, '--dataset=tiny', f'--data_dir={tiny_data}', f'--out_dir={out_dir}', *args,
               **kwargs)


def records(out_dir, kind):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        return [r for r in map(json.loads, f) if r['kind'] == kind]


def weights(out_dir):
    return load_checkpoint(os.path.join(out_dir, 'ckpt.pt'))['model']


def test_tiny_run_lowers_loss_and_logs_metrics(tiny_data, tmp_path):
    result = train(tiny_data, tmp_path, '--max_iters=30', '--eval_interval=15')
    evals, steps = records(tmp_path, 'eval'), records(tmp_path, 'train')
    assert [r['iter'] for r in evals] == [0, 15, 30] and [r['iter'] for r in steps] == list(range(1, 31))
    assert evals[-1]['val_loss'] < evals[0]['val_loss'] - 1.0
    for r in steps:
        assert {'loss', 'lr', 'ms_per_iter', 'tokens_per_s', 'time_s'} <= r.keys()
    for r in evals:
        assert {'train_loss', 'val_loss', 'time_s'} <= r.keys()
    assert 'ms/iter' in result.stdout and 'tok/s' in result.stdout and 'eta' in result.stdout
    checkpoint = load_checkpoint(os.path.join(tmp_path, 'ckpt.pt'))
    assert checkpoint['iter_num'] == 30 and checkpoint['config']['max_iters'] == 30


def test_resume_continues_exactly(tiny_data, tmp_path):
    """8 straight iterations == 4 iterations, a resume, 4 more: same losses, same weights (dropout on)."""
    common = ['--dropout=0.1', '--eval_interval=4']
    train(tiny_data, tmp_path / 'straight', '--max_iters=8', *common)
    train(tiny_data, tmp_path / 'resumed', '--max_iters=4', *common)
    train(tiny_data, tmp_path / 'resumed', '--max_iters=8', '--init_from=resume', *common)
    straight, resumed = records(tmp_path / 'straight', 'train'), records(tmp_path / 'resumed', 'train')
    assert [r['iter'] for r in resumed] == list(range(1, 9))
    assert [r['loss'] for r in straight] == [r['loss'] for r in resumed]
    a, b = weights(tmp_path / 'straight'), weights(tmp_path / 'resumed')
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert records(tmp_path / 'resumed', 'eval')[-1]['time_s'] > records(tmp_path / 'resumed', 'eval')[1]['time_s']


def test_two_gloo_ranks_match_one_process(tiny_data, tmp_path):
    """2 ranks x 1 micro-step of 4 sequences == 1 process x 2 micro-steps: the same global batches and update."""
    train(tiny_data, tmp_path / 'one', '--max_iters=5', '--eval_interval=5')
    train(tiny_data, tmp_path / 'two', '--max_iters=5', '--eval_interval=5', torchrun=2)
    one, two = records(tmp_path / 'one', 'train'), records(tmp_path / 'two', 'train')
    np.testing.assert_allclose([r['loss'] for r in one], [r['loss'] for r in two], rtol=1e-5)
    np.testing.assert_allclose(records(tmp_path / 'one', 'eval')[-1]['val_loss'],
                               records(tmp_path / 'two', 'eval')[-1]['val_loss'], rtol=1e-5)
    a, b = weights(tmp_path / 'one'), weights(tmp_path / 'two')
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_corrupt_checkpoint_is_a_clear_error(tiny_data, tmp_path):
    train(tiny_data, tmp_path, '--max_iters=2', '--eval_interval=2')
    path = tmp_path / 'ckpt.pt'
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    result = train(tiny_data, tmp_path, '--max_iters=4', '--init_from=resume', check=False)
    assert result.returncode != 0 and 'corrupt or truncated' in result.stderr
    result = run('sample.py', f'--out_dir={tmp_path}', check=False)
    assert result.returncode != 0 and 'corrupt or truncated' in result.stderr


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / 'ckpt.pt')
    good = dict(model={'w': torch.ones(3)}, optimizer={}, model_args={}, iter_num=1, best_val_loss=1.0, config={})
    save_checkpoint(good, path)

    def dies_midway(obj, f):
        f.write(b'partial bytes')
        raise KeyboardInterrupt  # the run is killed while writing
    monkeypatch.setattr(torch, 'save', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**good, 'iter_num': 2}, path)
    assert load_checkpoint(path)['iter_num'] == 1
    assert os.listdir(tmp_path) == ['ckpt.pt']  # no temporary file left behind


@pytest.mark.parametrize('damage, message', [
    ('missing', 'not found; prepare it with'),
    ('empty', 'is empty; prepare it with'),
    ('odd', 'truncated (odd byte count)'),
    ('out_of_vocab', 'token id 999 >= vocab_size 16'),
])
def test_bad_data_file_is_a_clear_error(tiny_data, tmp_path, damage, message):
    folder = tmp_path / 'data'
    folder.mkdir()
    (folder / 'meta.json').write_bytes((tiny_data / 'meta.json').read_bytes())
    (folder / 'val.bin').write_bytes((tiny_data / 'val.bin').read_bytes())
    train_bin = (tiny_data / 'train.bin').read_bytes()
    if damage == 'empty':
        (folder / 'train.bin').write_bytes(b'')
    elif damage == 'odd':
        (folder / 'train.bin').write_bytes(train_bin[:-1])
    elif damage == 'out_of_vocab':
        (folder / 'train.bin').write_bytes(np.full(1000, 999, dtype=np.uint16).tobytes())
    result = run('train.py', *TINY, f'--data_dir={folder}', f'--out_dir={tmp_path / "out"}', '--max_iters=1',
                 check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_sample_prints_requested_samples(tiny_data, tmp_path):
    train(tiny_data, tmp_path, '--max_iters=30', '--eval_interval=30')
    result = run('sample.py', f'--out_dir={tmp_path}', '--num_samples=3', '--max_new_tokens=12', '--start=abc',
                 '--device=cpu')
    body = result.stdout.split('meta.json\n', 1)[1]  # after the config echo and the tokenizer line
    samples = body.split('---------------\n')[:-1]
    assert len(samples) == 3
    for text in samples:
        assert text.startswith('abc') and len(text.rstrip('\n')) == 3 + 12
        assert set(text.rstrip('\n')) <= set('abcdefghijklmnop')


def test_first_use_prepares_shakespeare_char(tmp_path):
    if not os.path.isfile(os.path.join(MIRROR, 'tinyshakespeare.txt')):
        pytest.skip(f"no data mirror at {MIRROR}")
    data_dir = tmp_path / 'shakespeare_char'
    run('train.py', *TINY, '--dataset=shakespeare_char', f'--data_dir={data_dir}', f'--out_dir={tmp_path / "out"}',
        '--eval_only=True', env={'NANOFISHER_DATA_MIRROR': MIRROR})
    assert os.path.getsize(data_dir / 'train.bin') == 2 * 1_003_854
    assert records(tmp_path / 'out', 'eval')[0]['val_loss'] == pytest.approx(np.log(65), abs=0.1)


def test_eval_reports_the_standard_error_of_its_batches(tiny_data, tmp_path):
    """val_loss_se = sd of the eval_iters batch losses / sqrt(eval_iters): 0 for one batch, and about halved by 4x
    the batches (the same model: eval_only on the checkpoint)."""
    train(tiny_data, tmp_path, '--max_iters=4', '--eval_interval=4')
    se = {}
    for n in (1, 8, 32):
        train(tiny_data, tmp_path, '--init_from=resume', '--eval_only=True', f'--eval_iters={n}')
        se[n] = records(tmp_path, 'eval')[-1]['val_loss_se']
    assert se[1] == 0 and 0 < se[32] < se[8] < records(tmp_path, 'eval')[-1]['val_loss']
    assert 1.3 < se[8] / se[32] < 3.5  # sqrt(4) = 2, up to the spread of an estimated sd


def test_config_json_records_the_commit_the_run_ran_from(tiny_data, tmp_path):
    """config.json carries git_commit (HEAD of the checkout train.py ran from, as git itself says), git_clean and the
    machine (its CPU model as /proc/cpuinfo or platform names it)."""
    train(tiny_data, tmp_path, '--max_iters=1', '--eval_interval=1')
    with open(tmp_path / 'config.json') as f:
        config = json.load(f)
    assert config['machine'].startswith(platform.processor() or platform.machine()) or (
        os.path.exists('/proc/cpuinfo') and config['machine'].split(',')[0] in open('/proc/cpuinfo').read())
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        assert config['git_commit'] is None and config['git_clean'] is None
        return
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    assert config['git_commit'] == head.stdout.strip() and config['git_clean'] == (not dirty)
