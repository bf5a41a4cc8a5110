"""
Shared by the data/*/prepare.py scripts: getting the tiny Shakespeare text, pointing tiktoken at its files,
and writing outputs atomically.

Offline mirror: if the environment variable NANOFISHER_DATA_MIRROR names a folder laid out like
../shared/data/ (tinyshakespeare.txt, tiktoken_cache/), the text and GPT-2's BPE files are read from there
instead of downloaded. The mirror is only ever read, never written.
"""
import os
import hashlib
import tempfile
import urllib.request
from pathlib import Path

MIRROR_ENV = 'NANOFISHER_DATA_MIRROR'
SHAKESPEARE_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
SHAKESPEARE_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'
# GPT-2's vocab.bpe and encoder.json, named as tiktoken's cache names them (sha1 of their download address)
GPT2_CACHE_SHA256 = {
    '6d1cbeee0f20b3d9449abfede4726ed8212e3aee': '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5',
    '6c7ea1a7e38e3a7f062df639a5b80947f075ffe6': '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783',
}

def read_verified(path, sha256):
    # read a file's bytes, failing loudly if it is missing or its sha256 is not the expected one
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (expected it in the data mirror {MIRROR_ENV}={os.environ.get(MIRROR_ENV)})")
    with open(path, 'rb') as f:
        data = f.read()
    check_sha256(data, sha256, path)
    return data

def check_sha256(data, sha256, source):
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ValueError(f"{source} is corrupt: sha256 {actual}, expected {sha256}. Delete or replace it.")

def get_shakespeare(cache_dir):
    """The tiny Shakespeare text as a str: from the mirror if NANOFISHER_DATA_MIRROR is set, else from
    cache_dir/input.txt, which is downloaded first if missing (as nanoGPT does)."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        data = read_verified(os.path.join(mirror, 'tinyshakespeare.txt'), SHAKESPEARE_SHA256)
    else:
        path = os.path.join(cache_dir, 'input.txt')
        if os.path.exists(path):
            with open(path, 'rb') as f:
                data = f.read()
            check_sha256(data, SHAKESPEARE_SHA256, path)
        else:
            print(f"downloading {SHAKESPEARE_URL}")
            with urllib.request.urlopen(SHAKESPEARE_URL) as r:
                data = r.read()
            check_sha256(data, SHAKESPEARE_SHA256, SHAKESPEARE_URL)
            write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))
    return data.decode('utf-8')

def gpt2_encoding():
    """tiktoken's GPT-2 BPE. With a mirror, tiktoken reads its files from the mirror's tiktoken_cache/
    (TIKTOKEN_CACHE_DIR, also inherited by worker processes). Both files are checked first: tiktoken would
    otherwise delete a bad cached file and download a new one into the read-only mirror."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        cache_dir = os.path.join(mirror, 'tiktoken_cache')
        for name, sha256 in GPT2_CACHE_SHA256.items():
            read_verified(os.path.join(cache_dir, name), sha256)
        os.environ['TIKTOKEN_CACHE_DIR'] = cache_dir
    import tiktoken
    return tiktoken.get_encoding('gpt2')

def write_atomic(path, write):
    """Call write(tmp) on a temporary file in path's folder, then rename it to path, so an interrupted
    prepare never leaves a half-written file under the final name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + '.', suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644) # mkstemp makes it private; data files are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

def write_meta(out_dir, chars):
    """meta.json of a character-level set: {"vocab_size": n, "itos": [the character of id 0, 1, ...]}.
    JSON, not pickle: loading a data folder must never run code."""
    import json
    meta = {'vocab_size': len(chars), 'itos': list(chars)}
    write_atomic(os.path.join(out_dir, 'meta.json'), lambda tmp: Path(tmp).write_text(json.dumps(meta), encoding='utf-8'))

def load_meta(data_dir, allow_pickle_meta=False):
    """The character vocabulary of data_dir as {'vocab_size', 'itos' (id -> char), 'stoi' (char -> id)}, or None if
    the folder has no meta.json (a GPT-2 BPE set). An old meta.pkl is unpickled only with allow_pickle_meta=True, with
    a warning (unpickling a crafted file runs its code); without it, it is an error that says how to convert it."""
    import json
    json_path, pkl_path = os.path.join(data_dir, 'meta.json'), os.path.join(data_dir, 'meta.pkl')
    if os.path.exists(json_path):
        try:
            with open(json_path, encoding='utf-8') as f:
                meta = json.load(f)
            itos = meta['itos']
            if not (isinstance(itos, list) and meta['vocab_size'] == len(itos) and all(isinstance(c, str) for c in itos)):
                raise ValueError("'itos' must be a list of vocab_size strings")
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"{json_path} is corrupt ({type(e).__name__}: {e}); prepare the dataset again") from e
        return {'vocab_size': len(itos), 'itos': dict(enumerate(itos)), 'stoi': {c: i for i, c in enumerate(itos)}}
    if not os.path.exists(pkl_path):
        return None
    if not allow_pickle_meta:
        raise RuntimeError(f"{data_dir} has an old meta.pkl and no meta.json. Unpickling a file can run code, so it is "
                           f"not read by default: prepare the dataset again (it writes meta.json), or, if you trust "
                           f"the file, pass --allow_pickle_meta=True once (it then writes meta.json beside it)")
    import pickle
    import warnings
    warnings.warn(f"unpickling {pkl_path} (allow_pickle_meta=True): this runs any code the file holds")
    try:
        with open(pkl_path, 'rb') as f:
            meta = pickle.load(f)
        itos = [meta['itos'][i] for i in range(meta['vocab_size'])]
    except Exception as e:
        raise RuntimeError(f"{pkl_path} is corrupt ({type(e).__name__}: {e}); prepare the dataset again") from e
    write_meta(data_dir, itos)
    return load_meta(data_dir)
