"""sample.py's tokenizer: a character model decodes through its data folder's meta.json, a GPT-2-vocabulary model
through GPT-2's BPE; a character model without meta.json, an old meta.pkl, or a meta.json of another size is a clear
error, and a crafted meta.pkl is never unpickled by default. Tiny untrained checkpoints, made here."""
import os
import pickle
import runpy

import pytest
import torch

import forkrun
from checkpoint import save_checkpoint
from model import GPT, GPTConfig
from test_data import Payload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = os.environ.get('NANOFISHER_DATA_MIRROR') or os.path.join(REPO, '..', 'shared', 'data')
CHARS = list('abcdefghijklmnop')
write_meta = runpy.run_path(os.path.join(REPO, 'data', 'common.py'))['write_meta']


def checkpoint(tmp_path, vocab_size):
    """out_dir with a ckpt.pt of an untrained tiny model trained (so its config says) on tmp_path/data."""
    model_args = dict(n_layer=1, n_head=1, n_embd=8, block_size=16, bias=False, vocab_size=vocab_size, dropout=0.0,
                      attention='softmax')
    torch.manual_seed(0)
    out_dir, data_dir = tmp_path / 'out', tmp_path / 'data'
    out_dir.mkdir()
    data_dir.mkdir()
    save_checkpoint(dict(model=GPT(GPTConfig(**model_args)).state_dict(), optimizer={}, model_args=model_args,
                         iter_num=0, best_val_loss=1e9, config=dict(dataset='tiny', data_dir=str(data_dir))),
                    str(out_dir / 'ckpt.pt'))
    return out_dir, data_dir


def sample(out_dir, *args, env=None):
    return forkrun.run([os.path.join(REPO, 'sample.py'), f'--out_dir={out_dir}', '--device=cpu', '--num_samples=2',
                        '--max_new_tokens=6', *args], cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})})


def test_character_model_decodes_through_meta_json(tmp_path):
    out_dir, data_dir = checkpoint(tmp_path, len(CHARS))
    write_meta(str(data_dir), CHARS)
    result = sample(out_dir, '--start=abc')
    assert result.returncode == 0, result.stderr[-3000:]
    body = result.stdout.split('meta.json\n', 1)[1]  # after the config echo and the tokenizer line
    samples = body.split('---------------\n')[:-1]
    assert len(samples) == 2
    for text in samples:
        assert text.startswith('abc') and len(text.rstrip('\n')) == 3 + 6 and set(text.rstrip('\n')) <= set(CHARS)


@pytest.mark.parametrize('meta, message', [
    ('none', 'has no meta.json'),
    ('pickle', 'allow_pickle_meta'),
    ('crafted', 'allow_pickle_meta'),
    ('other size', 'has 10 characters'),
])
def test_character_model_without_its_meta_json_is_an_error(tmp_path, meta, message):
    """Not decoded as GPT-2 (the model's 16 ids are no BPE tokens), and a meta.pkl not unpickled unless allowed."""
    out_dir, data_dir = checkpoint(tmp_path, len(CHARS))
    marker = tmp_path / 'pwned'
    if meta in ('pickle', 'crafted'):
        with open(data_dir / 'meta.pkl', 'wb') as f:
            pickle.dump({'vocab_size': 16, 'itos': dict(enumerate(CHARS))} if meta == 'pickle' else Payload(marker), f)
    elif meta == 'other size':
        write_meta(str(data_dir), CHARS[:10])
    result = sample(out_dir)
    assert result.returncode != 0 and message in result.stderr.strip().splitlines()[-1], result.stderr[-3000:]
    if meta == 'none':
        assert f'{data_dir} has no meta.json' in result.stderr and 'prepare.py' in result.stderr
    assert not marker.exists()


def test_allow_pickle_meta_reads_and_converts_an_old_meta_pkl(tmp_path):
    out_dir, data_dir = checkpoint(tmp_path, len(CHARS))
    with open(data_dir / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': 16, 'itos': dict(enumerate(CHARS)), 'stoi': {}}, f)
    result = sample(out_dir, '--start=abc', '--allow_pickle_meta=True')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'unpickling' in result.stderr and (data_dir / 'meta.json').exists()
    assert result.stdout.split('meta.json\n', 1)[1].startswith('abc')


def test_gpt2_vocabulary_without_meta_decodes_as_bpe(tmp_path):
    if not os.path.isdir(os.path.join(MIRROR, 'tiktoken_cache')):
        pytest.skip(f"no data mirror with GPT-2's BPE files at {MIRROR}")
    out_dir, _ = checkpoint(tmp_path, 50304)
    result = sample(out_dir, '--start=Hello', env={'NANOFISHER_DATA_MIRROR': MIRROR})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GPT-2's BPE" in result.stdout and result.stdout.split("BPE\n", 1)[1].startswith('Hello')
