"""data/fineweb10B/prepare.py (the speedrun benchmark's data), offline on local text files through the same
pipeline as openwebtext's; the GPT-2 BPE files come from the data mirror (NANOFISHER_DATA_MIRROR)."""
import os
import runpy

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIRROR = os.environ.get('NANOFISHER_DATA_MIRROR') or os.path.join(REPO, '..', 'shared', 'data')
SCRIPT = os.path.join(REPO, 'data', 'fineweb10B', 'prepare.py')


def test_run_path_does_not_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv('NANOFISHER_DATA_MIRROR', str(tmp_path))  # an empty mirror: any preparation would fail
    prepare = runpy.run_path(SCRIPT)['prepare']
    assert prepare.__defaults__[1:3] == ('HuggingFaceFW/fineweb', 'sample-10BT')
    assert os.listdir(tmp_path) == []


def test_fineweb_pipeline_on_local_files(tmp_path, monkeypatch):
    if not os.path.isdir(os.path.join(MIRROR, 'tiktoken_cache')):
        pytest.skip(f"no data mirror with tiktoken_cache/ at {MIRROR} (set NANOFISHER_DATA_MIRROR)")
    monkeypatch.setenv('NANOFISHER_DATA_MIRROR', MIRROR)
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', os.path.join(MIRROR, 'tiktoken_cache'))  # restored afterwards
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    docs = [f"Web page {i}: FineWeb keeps cleaned, deduplicated English text, {i * 7} words of it." for i in range(40)]
    path = tmp_path / 'pages.txt'
    path.write_text('\n'.join(docs) + '\n', encoding='utf-8')
    out = tmp_path / 'out'
    runpy.run_path(SCRIPT)['prepare'](out_dir=str(out), data_files=str(path), num_proc=1,
                                      cache_dir=str(tmp_path / 'hf_cache'), test_size=0.1)
    assert sorted(os.listdir(out)) == ['train.bin', 'val.bin']
    import tiktoken
    enc = tiktoken.get_encoding('gpt2')
    train, val = (np.fromfile(out / f'{split}.bin', dtype=np.uint16) for split in ('train', 'val'))
    assert (val == enc.eot_token).sum() == 4 and (train == enc.eot_token).sum() == 36  # 10% of 40 documents
    decoded = [enc.decode(seg.tolist()) for arr in (train, val)
               for seg in np.split(arr, np.flatnonzero(arr == enc.eot_token) + 1)[:-1]]
    assert sorted(decoded) == sorted(d + '<|endoftext|>' for d in docs)
