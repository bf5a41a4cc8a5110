"""tests/forkrun.py, which runs train.py and sample.py for the other tests, shows what a plain subprocess shows:
the same exit status, stdout and stderr, argv, working directory, environment and sys.path, atexit handlers run,
an uncaught exception's traceback, `python -m`, and torch's thread count from the run's own OMP_NUM_THREADS."""
import os
import subprocess
import sys

import pytest

import forkrun

SCRIPT = r'''
import atexit, os, sys
atexit.register(lambda: print("atexit ran"))
print("argv", sys.argv[1:], "cwd", os.getcwd(), "path0", sys.path[0], "env", os.environ.get("FORKRUN_PROBE"))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "raise":
    raise ValueError("bad value 7")
sys.exit({"exit3": 3, "message": "a message", "none": None}[sys.argv[1]])
'''


@pytest.mark.parametrize('how', ['exit3', 'message', 'none', 'raise'])
def test_a_forked_run_shows_what_a_subprocess_shows(tmp_path, how):
    script = tmp_path / 'probe.py'
    script.write_text(SCRIPT)
    env = {**os.environ, 'FORKRUN_PROBE': 'seen'}
    plain = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, cwd=tmp_path, env=env)
    forked = forkrun.run([str(script), how], cwd=str(tmp_path), env=env)
    assert forked.returncode == plain.returncode == {'exit3': 3, 'message': 1, 'none': 0, 'raise': 1}[how]
    assert forked.stdout == plain.stdout and 'atexit ran' in forked.stdout and 'env seen' in forked.stdout
    if how == 'raise':  # the traceback's last line; its frames differ (runpy's)
        assert forked.stderr.splitlines()[-1] == plain.stderr.splitlines()[-1] == 'ValueError: bad value 7'
    else:
        assert forked.stderr == plain.stderr


def test_python_dash_m_runs_the_module_from_the_working_directory(tmp_path):
    (tmp_path / 'probe_module.py').write_text(SCRIPT)
    plain = subprocess.run([sys.executable, '-m', 'probe_module', 'exit3'], capture_output=True, text=True,
                           cwd=tmp_path, env=dict(os.environ))
    forked = forkrun.run(['-m', 'probe_module', 'exit3'], cwd=str(tmp_path), env=dict(os.environ))
    assert forked.returncode == plain.returncode == 3
    assert forked.stdout == plain.stdout and f'path0 {tmp_path} ' in forked.stdout


@pytest.mark.parametrize('threads', ['1', '3', None])  # 3: unlike the default on a 1- or 2-core machine
def test_a_forked_run_takes_its_thread_count_from_its_own_environment(tmp_path, threads):
    """torch reads OMP_NUM_THREADS once, at import: a run forked from a server must still use its own."""
    script = tmp_path / 'threads.py'
    script.write_text('import torch; print(torch.get_num_threads())')
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    if threads is not None:
        env['OMP_NUM_THREADS'] = threads
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env)
    forked = forkrun.run([str(script)], cwd=str(tmp_path), env=env)
    assert plain.returncode == forked.returncode == 0, plain.stderr + forked.stderr
    assert forked.stdout == plain.stdout
