"""
Tests for data/*/prepare.py. They run offline against the data mirror (NANOFISHER_DATA_MIRROR if set, else
../shared/data next to the repo) and write only into pytest's tmp_path.
"""
import os
import re
import sys
import runpy
import json
import pickle
import warnings
import shutil
import subprocess
import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = os.environ.get('NANOFISHER_DATA_MIRROR') or os.path.join(REPO, '..', 'shared', 'data')
TEXT = 'tinyshakespeare.txt'

def script(name):
    return os.path.join(REPO, 'data', name, 'prepare.py')

def load_prepare(name):
    return runpy.run_path(script(name))['prepare']

def common(name):
    return runpy.run_path(os.path.join(REPO, 'data', 'common.py'))[name]

def read_bin(path):
    return np.fromfile(path, dtype=np.uint16)

@pytest.fixture
def mirror(monkeypatch):
    if not os.path.isfile(os.path.join(MIRROR, TEXT)):
        pytest.skip(f"no data mirror with {TEXT} at {MIRROR} (set NANOFISHER_DATA_MIRROR)")
    monkeypatch.setenv('NANOFISHER_DATA_MIRROR', MIRROR)
    # prepare points TIKTOKEN_CACHE_DIR at the mirror; setting it here makes monkeypatch restore it afterwards
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', os.path.join(MIRROR, 'tiktoken_cache'))
    return MIRROR

@pytest.fixture
def text(mirror):
    with open(os.path.join(mirror, TEXT), encoding='utf-8') as f:
        return f.read()

@pytest.fixture
def gpt2(mirror):
    import tiktoken
    return tiktoken.get_encoding('gpt2')

def test_shakespeare_char_counts_vocab_and_val_roundtrip(text, tmp_path):
    load_prepare('shakespeare_char')(out_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['meta.json', 'train.bin', 'val.bin'] # no temp files left behind
    with open(tmp_path / 'meta.json', encoding='utf-8') as f:
        assert json.load(f)['vocab_size'] == 65 # plain JSON, readable without our code
    meta = common('load_meta')(str(tmp_path))
    assert meta['vocab_size'] == len(meta['itos']) == len(meta['stoi']) == 65
    train, val = read_bin(tmp_path / 'train.bin'), read_bin(tmp_path / 'val.bin')
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert os.path.getsize(tmp_path / 'train.bin') == 2 * len(train) # uint16 on disk
    assert max(train.max(), val.max()) < 65
    n = len(text)
    assert ''.join(meta['itos'][int(i)] for i in val) == text[int(n*0.9):]
    assert [meta['stoi'][c] for c in text[:1000]] == train[:1000].tolist()

def test_shakespeare_bpe_counts_and_val_roundtrip(text, gpt2, tmp_path):
    load_prepare('shakespeare')(out_dir=str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['train.bin', 'val.bin'] # no meta.json: GPT-2 BPE is assumed
    train, val = read_bin(tmp_path / 'train.bin'), read_bin(tmp_path / 'val.bin')
    assert (len(train), len(val)) == (301_966, 36_059)
    assert os.path.getsize(tmp_path / 'val.bin') == 2 * len(val) # uint16 on disk
    n = len(text)
    assert gpt2.decode(val.tolist()) == text[int(n*0.9):]

def test_openwebtext_pipeline_on_local_files(mirror, gpt2, tmp_path, monkeypatch):
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    docs = [f"Document {i}: the quick brown fox jumps over {i} lazy dogs." for i in range(12)]
    docs += ["ünïcode ✓ and a literal <|endoftext|> that must stay ordinary text", "short"]
    files = [tmp_path / 'a.txt', tmp_path / 'b.txt']
    files[0].write_text('\n'.join(docs[:9]) + '\n', encoding='utf-8')
    files[1].write_text('\n'.join(docs[9:]) + '\n', encoding='utf-8')
    out = tmp_path / 'out'
    load_prepare('openwebtext')(out_dir=str(out), data_files=','.join(map(str, files)), num_proc=1,
                                cache_dir=str(tmp_path / 'hf_cache'))
    assert sorted(os.listdir(out)) == ['train.bin', 'val.bin']
    train, val = read_bin(out / 'train.bin'), read_bin(out / 'val.bin')
    assert len(train) + len(val) == sum(len(gpt2.encode_ordinary(d)) + 1 for d in docs)
    # every document ends with eot (50256), and eot appears nowhere else
    eot = gpt2.eot_token
    assert eot == 50256
    got = []
    for arr in (train, val):
        assert len(arr) > 0 and arr[-1] == eot
        ends = np.flatnonzero(arr == eot)
        got += [gpt2.decode(seg.tolist()) for seg in np.split(arr, ends + 1)[:-1]]
    assert sorted(got) == sorted(d + '<|endoftext|>' for d in docs)
    assert (val == eot).sum() == 1 # test_size=0.0005 of 14 documents rounds up to one

def test_prepare_cli_runs_from_any_cwd(mirror, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, script('shakespeare_char'), f'--out_dir={tmp_path}'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert 'train has 1,003,854 tokens' in r.stdout
    assert os.path.getsize(tmp_path / 'train.bin') == 2 * 1_003_854

@pytest.mark.parametrize('name', ['shakespeare_char', 'shakespeare', 'openwebtext'])
def test_run_path_does_not_prepare(name, tmp_path, monkeypatch):
    # an empty mirror would make any preparation fail, so getting `prepare` back proves nothing ran
    monkeypatch.setenv('NANOFISHER_DATA_MIRROR', str(tmp_path))
    assert callable(runpy.run_path(script(name))['prepare'])
    assert os.listdir(tmp_path) == []

@pytest.mark.parametrize('name', ['shakespeare_char', 'shakespeare'])
def test_mirror_without_text_is_an_error_naming_the_path(name, tmp_path, monkeypatch):
    empty = tmp_path / 'mirror'
    empty.mkdir()
    monkeypatch.setenv('NANOFISHER_DATA_MIRROR', str(empty))
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty / TEXT))):
        load_prepare(name)(out_dir=str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()

def test_corrupt_text_is_an_error(mirror, tmp_path, monkeypatch):
    bad = tmp_path / 'mirror'
    bad.mkdir()
    data = open(os.path.join(mirror, TEXT), 'rb').read()
    (bad / TEXT).write_bytes(data.replace(b'First Citizen', b'Frist Citizen', 1))
    monkeypatch.setenv('NANOFISHER_DATA_MIRROR', str(bad))
    with pytest.raises(ValueError, match='corrupt: sha256'):
        load_prepare('shakespeare_char')(out_dir=str(tmp_path / 'out'))
    assert not (tmp_path / 'out').exists()

def test_corrupt_tiktoken_file_is_an_error_and_mirror_untouched(mirror, tmp_path, monkeypatch):
    bad = tmp_path / 'mirror'
    bad.mkdir()
    shutil.copy(os.path.join(mirror, TEXT), bad / TEXT)
    shutil.copytree(os.path.join(mirror, 'tiktoken_cache'), bad / 'tiktoken_cache')
    broken = bad / 'tiktoken_cache' / '6c7ea1a7e38e3a7f062df639a5b80947f075ffe6' # encoder.json
    broken.write_bytes(broken.read_bytes()[:-10])
    monkeypatch.setenv('NANOFISHER_DATA_MIRROR', str(bad))
    with pytest.raises(ValueError, match=re.escape(str(broken))):
        load_prepare('shakespeare')(out_dir=str(tmp_path / 'out'))
    assert broken.exists() # not deleted to be re-downloaded into the mirror, as tiktoken itself would

def test_write_atomic_leaves_no_partial_file(tmp_path):
    write_atomic = common('write_atomic')
    path = tmp_path / 'train.bin'
    def interrupted(tmp):
        np.arange(10, dtype=np.uint16).tofile(tmp)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(path), interrupted)
    assert os.listdir(tmp_path) == [] # neither train.bin nor its temp file
    path.write_bytes(b'old')
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(path), interrupted)
    assert os.listdir(tmp_path) == ['train.bin'] and path.read_bytes() == b'old'
    write_atomic(str(path), np.arange(3, dtype=np.uint16).tofile)
    assert read_bin(path).tolist() == [0, 1, 2]

CHARS = ['\n', ' ', 'a', 'b', 'é']

def write_pickle_meta(folder, obj):
    with open(folder / 'meta.pkl', 'wb') as f:
        pickle.dump(obj, f)

def test_meta_json_roundtrip_and_no_meta_is_bpe(tmp_path):
    assert common('load_meta')(str(tmp_path)) is None # no meta at all: a GPT-2 BPE set
    common('write_meta')(str(tmp_path), CHARS)
    meta = common('load_meta')(str(tmp_path))
    assert meta == {'vocab_size': 5, 'itos': dict(enumerate(CHARS)), 'stoi': {c: i for i, c in enumerate(CHARS)}}

def test_load_meta_refuses_an_old_meta_pkl_by_default(tmp_path):
    write_pickle_meta(tmp_path, {'vocab_size': 5, 'itos': dict(enumerate(CHARS)), 'stoi': {}})
    with pytest.raises(RuntimeError, match='allow_pickle_meta'):
        common('load_meta')(str(tmp_path))
    assert not (tmp_path / 'meta.json').exists()

def test_allow_pickle_meta_converts_it_to_meta_json_with_a_warning(tmp_path):
    write_pickle_meta(tmp_path, {'vocab_size': 5, 'itos': dict(enumerate(CHARS)), 'stoi': {}})
    with pytest.warns(UserWarning, match='unpickling'):
        meta = common('load_meta')(str(tmp_path), allow_pickle_meta=True)
    assert meta['itos'] == dict(enumerate(CHARS)) and meta['stoi']['é'] == 4
    assert (tmp_path / 'meta.json').exists()
    with warnings.catch_warnings():
        warnings.simplefilter('error') # from now on meta.json is read, the pickle never again
        assert common('load_meta')(str(tmp_path)) == meta

class Payload:
    """Unpickling an instance writes the marker file (exec of a line of code): what a crafted meta.pkl can do."""
    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').write('ran')"
    def __reduce__(self):
        return exec, (self.code,)

def test_crafted_meta_pkl_is_not_run_by_default(tmp_path):
    marker = tmp_path / 'pwned'
    write_pickle_meta(tmp_path, Payload(marker))
    with pytest.raises(RuntimeError, match='allow_pickle_meta'):
        common('load_meta')(str(tmp_path))
    assert not marker.exists()
    # the payload is live: the flag (which says "I trust this file") runs it, then finds no vocabulary in it
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match='corrupt'):
        common('load_meta')(str(tmp_path), allow_pickle_meta=True)
    assert marker.read_text() == 'ran'
