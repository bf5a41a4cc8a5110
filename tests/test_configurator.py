"""configurator.py: overrides apply; an unknown key or a wrong type fails naming the key; -h prints the keys."""
import os
import subprocess
import sys

import pytest

import forkrun

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
    (['--kl_clip=[1e-3]'], TypeError, 'kl_clip'),
    (['--kl_clip=True'], TypeError, 'kl_clip'),
], ids=['unknown-key', 'float-for-int', 'int-for-bool', 'list-for-none', 'bool-for-none'])
def test_bad_override_names_the_key(argv, error, key):
    with pytest.raises(error, match=f"'{key}'"):
        configure(argv, **DEFAULTS)


def test_none_default_takes_none_a_number_or_a_string(tmp_path):
    assert configure(['--kl_clip=None'], **DEFAULTS)['kl_clip'] is None
    assert configure(['--kl_clip=1'], **DEFAULTS)['kl_clip'] == 1
    assert configure(['--kl_clip=eigen'], **DEFAULTS)['kl_clip'] == 'eigen'  # as solve = None takes a name
    path = tmp_path / 'cfg.py'
    path.write_text("kl_clip = [1e-3]\n")
    with pytest.raises(TypeError, match="'kl_clip' must be None, a number or a string.*list"):
        configure([str(path)], **DEFAULTS)


def test_unknown_key_suggests_the_nearest_and_only_config_keys_count():
    defaults = dict(DEFAULTS, damping=1e-3, here='/repo', config_keys=[*DEFAULTS, 'damping'])
    with pytest.raises(ValueError, match="unknown config key 'dampng'; did you mean 'damping'\\?") as error:
        configure(['--dampng=1'], **defaults)
    assert 'batch_size' not in str(error.value) and '--help' in str(error.value)  # a hint, not every key
    with pytest.raises(ValueError, match="unknown config key 'here'"):  # a global, but not a config key
        configure(['--here=/tmp'], **defaults)


def test_help_prints_the_scripts_docstring_and_keys(tmp_path):
    """-h anywhere: the calling script's docstring (not the configurator's), its config keys = defaults and the
    comment beside each default (a later reassignment changes neither), exit status 0, no override applied."""
    script = tmp_path / 'script.py'
    script.write_text(f'''"""A script's docstring."""
import sys
here = 'internal'
steps = 10  # how many steps
rate = 0.5
clip = None  # None disables
name = (
    'x')  # a default over two lines
config_keys = [k for k in ('steps', 'rate', 'clip', 'name')]
exec(open({os.path.join(REPO, 'configurator.py')!r}).read())
steps = 20  # not the default
print('not reached')
''')
    result = subprocess.run([sys.executable, str(script), '--steps=3', '-h'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "A script's docstring." and 'not reached' not in result.stdout
    body = [line.split() for line in lines if line.startswith('  ')]
    assert body == [['steps', '=', '10', '#', 'how', 'many', 'steps'], ['rate', '=', '0.5'],
                    ['clip', '=', 'None', '#', 'None', 'disables'],
                    ['name', '=', "'x'", '#', 'a', 'default', 'over', 'two', 'lines']]


def test_config_file_with_unknown_key_fails(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text("learning_rat = 1e-3\n")
    with pytest.raises(ValueError, match="'learning_rat'"):
        configure([str(path)], **DEFAULTS)


def test_train_py_rejects_unknown_key():
    result = forkrun.run([os.path.join(REPO, 'train.py'), '--dampnig=1e-2'], cwd=REPO, env=dict(os.environ))
    assert result.returncode != 0
    assert "unknown config key 'dampnig'; did you mean 'damping'?" in result.stderr.strip().splitlines()[-1]
