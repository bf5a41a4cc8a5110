"""Every script's --help: its usage (the module docstring, and for the configurator's scripts the config keys with
their defaults and comments) on stdout, exit status 0, no traceback."""
import ast
import os
import pytest

import forkrun

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# train.py, sample.py and benchmarks/fisher_quality.py (the configurator's) are tested below, with their keys
SCRIPTS = ['study.py', 'plot.py', 'benchmarks/attention.py', 'benchmarks/ddp.py', 'benchmarks/kernels.py',
           'data/shakespeare_char/prepare.py', 'data/shakespeare/prepare.py', 'data/openwebtext/prepare.py',
           'data/fineweb10B/prepare.py']


def help_of(script, flag='--help'):
    # benchmarks/ import the repository's modules: they run as modules from its root, as their docstrings say
    command = ['-m', script[:-3].replace('/', '.')] if script.startswith('benchmarks/') else [os.path.join(REPO, script)]
    result = forkrun.run([*command, flag], cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_prints_usage_and_exits_0(script):
    with open(os.path.join(REPO, script)) as f:
        first_line = ast.get_docstring(ast.parse(f.read())).splitlines()[0]
    assert first_line in help_of(script)


@pytest.mark.parametrize('flag', ['-h', '--help'])
def test_train_help_lists_config_keys_with_defaults_and_comments(flag):
    out = help_of('train.py', flag)
    assert out.startswith('Trains a GPT')  # train.py's docstring, not the configurator's
    lines = out.splitlines()
    damping = next(line for line in lines if line.strip().startswith('damping = '))
    assert '0.001' in damping and '# λ of the damped inverse' in damping
    assert any(line.strip().startswith('kl_clip = None') and 'None disables' in line for line in lines)
    assert not any(line.strip().startswith(('here = ', 'config_keys = ')) for line in lines)  # internal names


def test_sample_and_fisher_quality_help_list_their_keys():
    out = help_of('sample.py')
    assert any(line.strip().startswith('allow_pickle_meta = False  # ') for line in out.splitlines())
    assert out.startswith('Samples from a model')
    out = help_of('benchmarks/fisher_quality.py', '-h')
    assert out.startswith('How close is each optimizer')
    assert any(line.strip().startswith('ng_iters = 30') and '# ' in line for line in out.splitlines())


def test_requirements_pin_what_is_installed():
    """Every requirement is pinned (==), and the installed version is the pinned one (a fresh install from
    requirements.txt runs what the suite was run with; torch's local build tag, +cpu or +cu128, aside)."""
    from importlib.metadata import version
    pins = [line.split('#')[0].strip() for line in open(os.path.join(REPO, 'requirements.txt'))]
    pins = [p for p in pins if p]
    assert pins and all('==' in p for p in pins), [p for p in pins if '==' not in p]
    for name, pinned in (p.split('==') for p in pins):
        assert version(name).split('+')[0] == pinned, f"{name}: installed {version(name)}, pinned {pinned}"
