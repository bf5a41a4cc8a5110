"""configurator.py: overrides apply; an unknown key or a wrong type fails naming the key."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configure(argv, **defaults):
    """Runs configurator.py over `defaults` as train.py does (exec in the script's globals)."""
    namespace = dict(defaults)
    old_argv = sys.argv
    sys.argv = ['train.py', *argv]
    try:
        exec(open(os.path.join(REPO, 'configurator.py')).read(), namespace)
    finally:
        sys.argv = old_argv
    return {k: namespace[k] for k in defaults}


DEFAULTS = dict(batch_size=12, learning_rate=6e-4, dataset='openwebtext', compile=True, kl_clip=None)


def test_command_line_overrides_apply_with_types():
    cfg = configure(['--batch_size=32', '--learning_rate=1', '--dataset=shakespeare_char', '--compile=False',
                     '--kl_clip=0.001'], **DEFAULTS)
    assert cfg == dict(batch_size=32, learning_rate=1.0, dataset='shakespeare_char', compile=False, kl_clip=0.001)
    assert type(cfg['learning_rate']) is float


def test_config_file_then_command_line(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text("batch_size = 7  # a comment\ndataset = 'shakespeare'\n")
    cfg = configure([str(path), '--batch_size=9'], **DEFAULTS)
    assert cfg['batch_size'] == 9 and cfg['dataset'] == 'shakespeare'


@pytest.mark.parametrize('argv, error, key', [
    (['--batch_sise=32'], ValueError, 'batch_sise'),
    (['--batch_size=3.5'], TypeError, 'batch_size'),
    (['--compile=1'], TypeError, 'compile'),
], ids=['unknown-key', 'float-for-int', 'int-for-bool'])
def test_bad_override_names_the_key(argv, error, key):
    with pytest.raises(error, match=f"'{key}'"):
        configure(argv, **DEFAULTS)


def test_config_file_with_unknown_key_fails(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text("learning_rat = 1e-3\n")
    with pytest.raises(ValueError, match="'learning_rat'"):
        configure([str(path)], **DEFAULTS)


def test_train_py_rejects_unknown_key():
    result = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), '--dampnig=1e-2'],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "unknown config key 'dampnig'" in result.stderr
