"""Run a script as `python script.py args` does, in a fresh process, without paying torch's import each time.

Most of a tiny train.py run's seconds are the import of torch and torch._dynamo (about 5 of 6 s on 2 cores), and
the tests run train.py and sample.py some hundred times. A server process imports those libraries once and forks
one child per run: the child takes the run's argv, environment and working directory, sends its stdout and
stderr to files, runs the script as __main__ (the repository's own modules are imported fresh, in the child), runs
its atexit handlers and exits with the script's code, so a test sees what a subprocess would show it. The server
never computes before it forks (no threads to lose). Torch, numpy's BLAS and OpenMP read their thread counts
once, at import, from THREAD_VARIABLES: a run is forked from a server started with the run's own values of them
(one server per setting), so its sums add up in the order a subprocess's would. NANOFISHER_TEST_FORK=0 (or a
platform without fork) runs a plain subprocess instead.

    python tests/forkrun.py   # the server: reads one JSON request a line on stdin, answers the exit code
"""
import json
import os
import subprocess
import sys
import tempfile

PRELOAD = ['numpy', 'torch', 'torch._dynamo', 'torch.distributed', 'torch.nn.parallel']  # third-party only
THREAD_VARIABLES = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')


def _child(request):
    """In the forked child: become `python script argv...` and never return."""
    code = 1
    try:
        os.chdir(request['cwd'])
        os.environ.clear()
        os.environ.update(request['env'])
        for fd, path in ((1, request['stdout']), (2, request['stderr'])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        import runpy
        argv = list(request['argv'])
        try:
            if argv[0] == '-m':  # python -m module args: the working directory first on the path
                sys.argv, sys.path[0] = argv[1:], os.getcwd()
                runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
            else:  # python script.py args: the script's folder first on the path
                sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name='__main__')
            code = 0
        except SystemExit as e:  # sys.exit(None | int | message), as the interpreter reads it
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            import traceback
            traceback.print_exc()
        import atexit
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve():
    for name in PRELOAD:
        __import__(name)
    answer = os.fdopen(os.dup(1), 'w')  # the protocol's channel; fd 1 itself becomes each child's stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            answer.close()
            _child(request)
        _, status = os.waitpid(pid, 0)
        answer.write(json.dumps(os.waitstatus_to_exitcode(status)) + '\n')
        answer.flush()


_servers = {}  # the THREAD_VARIABLES' values -> a server started with them


def run(argv, cwd, env):
    """subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=env), by a fork."""
    if os.environ.get('NANOFISHER_TEST_FORK', '1') == '0' or not hasattr(os, 'fork') or sys.platform == 'darwin':
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=env)
    threads = tuple(env.get(name) for name in THREAD_VARIABLES)
    if threads not in _servers or _servers[threads].poll() is not None:
        _servers[threads] = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True, env=env)
    server = _servers[threads]
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, 'stdout'), os.path.join(folder, 'stderr')
        server.stdin.write(json.dumps(dict(argv=list(argv), cwd=cwd, env=dict(env), stdout=out, stderr=err)) + '\n')
        server.stdin.flush()
        returncode = json.loads(server.stdout.readline())
        read = lambda path: open(path, errors='replace').read() if os.path.exists(path) else ''
        return subprocess.CompletedProcess([sys.executable, *argv], returncode, read(out), read(err))


if __name__ == '__main__':
    serve()
