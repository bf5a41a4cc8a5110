"""
Checkpoints that are never lost: written to a temporary file in the same folder, flushed to disk, then renamed
over the old one (an atomic step on POSIX), so a run killed mid-save leaves the previous checkpoint intact.
Loading never executes code: torch.load(weights_only=True) unpickles only tensors and plain containers, so a crafted
file is an error, not a program.
"""

import os
import platform
import subprocess

import torch

CHECKPOINT_KEYS = ('model', 'optimizer', 'model_args', 'iter_num', 'best_val_loss', 'config')


def save_checkpoint(checkpoint, path):
    tmp_path = path + '.tmp'
    try:
        with open(tmp_path, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def load_checkpoint(path, map_location='cpu'):
    """Loads a checkpoint written by save_checkpoint; a missing, truncated or corrupt file is a clear error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train one with train.py (out_dir={os.path.dirname(path)!r})")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise RuntimeError(f"checkpoint {path} is corrupt or truncated, or holds objects other than tensors and plain "
                           f"containers, which are not unpickled ({type(e).__name__}: {first}); "
                           f"it cannot be resumed from") from e
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks the keys {missing}; it was not written by train.py")
    return checkpoint


def git_state(folder=os.path.dirname(os.path.abspath(__file__))):
    """Where a run's numbers came from: {'git_commit': HEAD's hash, 'git_clean': no tracked file modified}, or Nones
    outside a git checkout (train.py writes it into config.json, study.py into results.json)."""
    try:
        run = lambda *args: subprocess.run(['git', *args], cwd=folder, capture_output=True, text=True, timeout=10)
        head, status = run('rev-parse', 'HEAD'), run('status', '--porcelain', '--untracked-files=no')
        if head.returncode != 0 or status.returncode != 0:
            return dict(git_commit=None, git_clean=None)
        return dict(git_commit=head.stdout.strip(), git_clean=not status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return dict(git_commit=None, git_clean=None)


def machine_name():
    """The machine a run's seconds were measured on: the CPU model and the cores torch may use, and the GPU if any
    (config.json and results.json carry it beside the commit; a time is comparable only on the same machine)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    except OSError:
        pass
    name = f"{cpu}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores"
    if torch.cuda.is_available():
        name += f", {torch.cuda.get_device_name()}"
    return f"{name}, torch {torch.__version__}"
