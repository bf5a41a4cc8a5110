"""
Optimizer-vs-optimizer runs on one config: each run is `python train.py CONFIG ... --out_dir=OUT/<run>`, exactly
what a user would type, with the same seed, data order (data_seed) and token budget (max_iters), then a table of
results in results.md and results.json, and plots (plot.py) of the runs.

$ python study.py config/studies/compare_small.py            # a study file: the README's results
$ python study.py config/studies/ablations/damping.py --max_iters=100   # an ablation, shortened from the command line
$ python study.py config/adamw_small.py --optimizers=adamw,muon,fixed_fisher --max_iters=500 --out_dir=out-study
$ python study.py config/adamw_small.py --runs="kfac:damping=1e-2;kfac:damping=1e-3" --tune lr=3e-4,1e-3,3e-3
$ python study.py config/adamw_small.py --optimizers=adamw,muon --seeds=1337,1,2 --reference=adamw --ladder=adamw

study.py's own arguments; everything else (config files, --key=value) goes to every run's train.py as written:
  --optimizers=a,b,...   one run per optimizer: --optimizer=a
  --runs="a;b:k=v,k2=v2" runs with overrides of their own, ';' between runs: an optimizer or a config file, then ':'
                         and comma-separated --key=value overrides for that run only. A config file's run is
                         `train.py FILE <the shared arguments> <its overrides>`, named after the file
                         ("kfac_small damping=1e-2"); so give no shared config file with such runs.
  --tune KEY=v1,v2,...   run every run once per value and keep the one with the lowest final val loss, so that
                         no optimizer is compared untuned; KEY is a train.py global (lr means learning_rate);
                         several --tune give the product grid; an optimizer knob is tuned only for the
                         optimizers that take it (--tune damping=... leaves AdamW's runs alone)
  --max_grid_extensions=2  a numeric grid axis (every value a positive number) is a log grid: where a run's best
                         point has that axis at the lowest or highest value tried, one point more is run one step
                         further out along that axis only (the other axes at the best point's values; the step is
                         the ratio of the two outermost values on that side: 1e-3,3e-3,1e-2 with the best at 1e-2
                         adds 3.33e-2), and again, at most this many rounds; a best still on an edge is flagged
                         (the table's 'edge' column). An axis of integers stays one (the new value rounded)
  --tune_iters=N         tune on runs of N iterations (max_iters = lr_decay_iters = N: a whole schedule), then run
                         the best point at the full length; unset, the grid runs at the full length
  --seeds=1337,1,2       each run is tuned at the first seed only (--seed=s --data_seed=s: initialisation, dropout
                         and batch order), then its best point repeated at each further seed; the table has the
                         mean, sd and 95% interval of the final val loss over the seeds. Unset: one run per grid
                         point at the config's seed, as before
  --reference=RUN        a run's name: every run's final val loss minus RUN's, seed by seed (a paired difference)
  --compare_to=RUN,...   more runs to pair every run with, as --reference (results.json: diff_to_<RUN>_mean, _ci95)
  --ladder=RUN --ladder_budgets=1,2,4   speedup as Wen et al. (2025) measure it: RUN's best point is also run at
                         each budget (max_iters and lr_decay_iters times it, warmup the same; every seed), and each
                         run's speedup is the tokens (training seconds) RUN's ladder needs to reach its final val
                         loss over its own tokens (seconds): see speedup()
  --target_loss=1.9      steps and training seconds to the first evaluation at or below this val loss; a run's
                         name instead (--target_loss=adamw_small) means that run's final val loss (its best point's,
                         the mean over the seeds)
  --out_dir=out-study    the root: OUT/<run>/ (train.py's out_dir: checkpoints and train.log, its output), and
                         without a results_dir the results and plots
  --results_dir=DIR      results.md, results.json and the plots go to DIR, and each run's records (run.json,
                         metrics.jsonl, config.json and the last 50 lines of train.log; no checkpoint) to
                         DIR/runs/<run>/ when it ends, where a later study.py (another machine, an empty OUT) reads a
                         finished run instead of rerunning it. A study file's default: results/<study>
                         (results/<group>/<study> for config/studies/<group>/), relative to the current folder;
                         --results_dir= (empty) turns it off
  --runs_from=DIR,...    more results folders whose runs/<run>/ a finished run is read from (not copied): a study
                         that re-reads another's runs (a subset of its methods, other timing) without rerunning them
  --nproc=1              ranks per run: above 1, each run goes under torchrun --standalone --nproc_per_node=N
  --jobs=1               runs at a time (each its own process: with OMP_NUM_THREADS=1, one per core)
  --plot_vs=KEY          also final_val_loss_vs_KEY.png: the runs' final val loss (mean, 95% interval over the seeds)
                         against their override KEY's value, a line per setting of their other overrides
  --timing=FILE          a timing study's results.json (config/studies/timing_all_small.py: each config alone on the
                         machine): a run's seconds and ms columns become its iterations times the ms/iter of the
                         timing row of the same name, so that × seconds does not depend on what ran beside it
                         (the measured time_s is kept as measured_time_s); one ms/iter per run name, so a
                         grid over a knob that changes a step's cost (factor_update_freq) is not retimed per point
  --tuned_from=FILE      another study's results.json (a cell of the same methods at another length): each run
                         runs only the best point of its row there, at every seed, instead of a grid of its own
                         (--tune_iters unused; --tune's axes, if given, must be the axes of that point); a run with
                         no finished row there (pending, or every point failed) is an error; grid and edge are
                         that study's
  --rerun=False          a run that already ran to its end with the same arguments (OUT/<run>/run.json, or
                         DIR/runs/<run>/run.json) is read, not run again: extend a grid or add runs and only they
                         run; True reruns all

A study file (config/studies/*.py, config/studies/ablations/*.py) is a Python file that sets `runs`: a list of run
specs as above; and optionally train_args (the shared train.py arguments), tune (a list of KEY=v1,v2,...),
target_loss, out_dir, jobs, nproc, seeds, reference, compare_to, max_grid_extensions, ladder, ladder_budgets,
tune_iters, results_dir, runs_from, plot_vs, timing and tuned_from (STUDY_KEYS). Arguments on the command line come after the file's: shared train.py arguments are
appended (so they win), --runs/--optimizers and --tune add to the file's, the others replace.

A run's name is its optimizer (or config file) and overrides ("kfac damping=1e-2 learning_rate=1e-3"), its folder
the same with '_' for ' '; with seeds a trial's name ends in seed=S, a shortened tuning trial's in max_iters=N, a
ladder trial's in tokens=Kx. A run that train.py stops as diverged (a {"kind": "diverged"} record in its
metrics.jsonl, a 'training diverged:' line in its log) or whose loss turns NaN or inf is 'diverged', one that exits
with an error otherwise 'failed'; the others go on. Times are train.py's: time_s is training time (evaluation left
out), the ms columns are medians over the train records of ms/iter and of the parts the run logs (train.py:
ms_fwd_bwd, ms_step and peak_mem_mb; the Kronecker optimizers: ms_factors, ms_decomp, ms_precond; they overlap: the
factor hooks run in the backward, decompositions and preconditioning in the step); '—' where a run has none. Runs
at the same time (--jobs above 1) share the machine: compare their times only with each other. A run stopped part
way (the study killed, a session's end) goes on from its last checkpoint when a study runs it again in the same OUT
with the same arguments and code (run_one): train.py --init_from=resume gives the same weights and evaluations as a
run never stopped; its seconds are the sum of its parts, each measured where it ran (retime such a study with
--timing); resumed_at lists the iterations it went on from.

results.json: {"rows": the table's runs (each spec at its best point), "trials": every run, "train_args",
"target_loss", "seeds", "reference", "tune_iters", "max_grid_extensions", "tuned_from", "ladder": null or {name, budgets, seeds:
[{seed, tokens, final_val_losses, seconds, monotone}]}}. A trial has name, trial, optimizer, overrides, tuned (its
grid point), seed, status, error, final_val_loss, best_val_loss, final_train_loss, val_loss_se (its final
evaluation's), steps_to_target, seconds_to_target, iters, tokens, time_s, the ms keys, peak_mem_mb, out_dir (the
folder its records were read from: OUT/<run>, or DIR/runs/<run> for a run read from there), returncode, wall_s
(null where unknown or reused: a resumed run's is its last part's), reused, resumed_at, and git_commit, git_clean,
machine (from its config.json: the commit train.py ran from, whether no tracked file was modified, and checkpoint.machine_name() of where it ran). A row has its first seed's full-length trial's keys (tuned: the best
point; status and error: the first seed's that did not end well, 'pending' for one not run yet) and
  grid                    {axis: every value tried}; edge: the axes whose best is still on the grid's edge
  seeds, final_val_losses the seeds (null: the config's) and each one's final val loss (null: diverged or failed),
                          out_dirs their folders
  final_val_loss_mean, final_val_loss_sd, final_val_loss_ci95   over the seeds: sd with n − 1, the interval
                          mean ± t(0.975, n − 1) sd / √n; null where a seed has none (a diverged seed makes no
                          smaller sample), sd and interval null with one seed
  val_loss_se             the mean over the seeds of the final evaluation's standard error (train.py: the sd of
                          the eval_iters batch losses / √eval_iters): evaluation noise, against the seeds' sd
  diff_to_reference_mean, diff_to_reference_ci95   per seed this row's final − the reference's, then mean and
                          interval as above (null without a reference); diff_to_<RUN>_mean, _ci95 the same for each
                          run of compare_to
  speedup_tokens, speedup_seconds, speedup_tokens_ci95, speedup_seconds_ci95, speedup_tokens_per_seed,
  speedup_seconds_per_seed, speedup_beyond   the mean and interval over the seeds of speedup(); a seed outside the
                          ladder counts at its bound: speedup_beyond '>' (some seed beats the largest budget: the mean
                          is a lower bound, no interval), '<' (some seed is worse than the 1× run: an upper bound),
                          '<>' (both: no mean); null without a ladder
"""

import glob
import hashlib
import itertools
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

from scipy import stats
from tqdm import tqdm

from plot import BREAKDOWN, finite, median_ms, plot_final_vs, plot_runs, read_records

here = os.path.dirname(os.path.abspath(__file__))
ALIASES = {'lr': 'learning_rate'}  # --tune lr=... is the peak learning rate
STUDY_KEYS = {'runs', 'train_args', 'tune', 'target_loss', 'out_dir', 'jobs', 'nproc', 'seeds', 'reference', 'compare_to',
              'max_grid_extensions', 'ladder', 'ladder_budgets', 'tune_iters', 'results_dir', 'runs_from', 'plot_vs',
              'timing', 'tuned_from'}
LOG_TAIL = 50  # lines of train.log that summarize reads, and that DIR/runs/<run>/ keeps

# results.md's columns: (header, results.json key, format), in groups; the optional ones are shown when the study
# has a grid, seeds, a reference or a ladder
NAME_COLUMNS = [('run', 'name', '{}'), ('tuned{at_seed}', 'tuned', '{}')]
GRID_COLUMNS = [('grid', 'grid', '{}'), ('edge', 'edge', '{}')]
LOSS_COLUMNS = [('status', 'status', '{}'), ('final val', 'final_val_loss_mean', '{:.4f}')]
SEED_COLUMNS = [('± sd', 'final_val_loss_sd', '{:.4f}'), ('95% CI', 'final_val_loss_ci95', '{:.4f}'),
                ('eval se', 'val_loss_se', '{:.4f}')]
REFERENCE_COLUMNS = [('Δ {reference}', 'diff_to_reference_mean', '{:+.4f}'),
                     ('Δ 95% CI', 'diff_to_reference_ci95', '{:+.4f}')]
LADDER_COLUMNS = [('× tokens', 'speedup_tokens', '{:.2f}×'), ('× tokens 95% CI', 'speedup_tokens_ci95', '{:.2f}'),
                  ('× seconds', 'speedup_seconds', '{:.2f}×'),
                  ('× seconds 95% CI', 'speedup_seconds_ci95', '{:.2f}')]
RUN_COLUMNS = [('best val', 'best_val_loss', '{:.4f}'),
               ('steps to {target}', 'steps_to_target', '{:,}'), ('s to {target}', 'seconds_to_target', '{:.1f}'),
               ('iters', 'iters', '{:,}'), ('train s', 'time_s', '{:.1f}'),
               *[(('ms/iter' if key == 'ms_per_iter' else part), key, '{:.1f}') for key, part in BREAKDOWN],
               ('peak MB', 'peak_mem_mb', '{:,.0f}')]


def parse_pairs(text, what):
    """'k=v,k2=v2' -> [(k, v), (k2, v2)], values kept as written."""
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(','))):
        if '=' not in item:
            raise ValueError(f"{what}: {item!r} is not key=value")
        key, value = item.split('=', 1)
        pairs.append((ALIASES.get(key.strip(), key.strip()), value.strip()))
    return pairs


def parse_runs(optimizers, runs):
    """[(optimizer or config file, [(key, value), ...]), ...] from --optimizers=a,b and --runs="a;b:k=v,k2=v2"."""
    specs = [(name.strip(), []) for name in optimizers.split(',') if name.strip()]
    for item in filter(None, (s.strip() for s in runs.split(';'))):
        name, _, overrides = item.partition(':')
        specs.append((name.strip(), parse_pairs(overrides, f"--runs item {item!r}")))
    return specs


def run_name(spec, overrides):
    """'kfac_small damping=1e-2': the spec (a config file by its name) and its overrides."""
    name = os.path.basename(spec)[:-3] if spec.endswith('.py') else spec
    return ' '.join([name] + [f'{k}={v}' for k, v in overrides])


def numbers(value, kind):
    """[1337, 1, 2] from a study file's list or the command line's '1337,1,2'; None stays None."""
    if value is None:
        return None
    items = value.split(',') if isinstance(value, str) else value
    return [kind(v) for v in items if str(v).strip()]


def read_py(path):
    """The globals a config or study file sets (it runs as Python, as train.py's configurator runs it)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    scope = {}
    with open(path) as f:
        exec(compile(f.read(), path, 'exec'), scope)
    return {k: v for k, v in scope.items() if not k.startswith('__')}


def spec_optimizer(spec, train_args):
    """The optimizer of a run spec: the spec itself, or the `optimizer` its config file sets, else the shared
    arguments' --optimizer=, else train.py's default (adamw)."""
    if not spec.endswith('.py'):
        return spec
    shared = [a.split('=', 1)[1] for a in train_args if a.startswith('--optimizer=')]
    return read_py(spec).get('optimizer', shared[-1] if shared else 'adamw')


def parse_tune(tunes):
    """--tune lr=1e-4,3e-4 --tune damping=1e-3,1e-2 -> [[(learning_rate, 1e-4), (damping, 1e-3)], ...]: the grid."""
    axes = []
    for text in tunes:
        key, sep, values = text.partition('=')
        if not sep or not values.strip():
            raise ValueError(f"--tune {text!r}: expected KEY=v1,v2,...")
        key = ALIASES.get(key.strip(), key.strip())
        axes.append([(key, v.strip()) for v in values.split(',') if v.strip()])
    return [list(point) for point in itertools.product(*axes)]


def tuned_here(optimizer, key):
    """False for an optimizer knob that this optimizer does not take (--tune damping=... leaves AdamW's runs
    alone); True for everything else: train.py's own globals, and optimizers not in the registry."""
    from optim import OPTIMIZERS, accepted_args  # torch and the optimizers: seconds to import, so only when tuning
    if optimizer not in OPTIMIZERS or key == 'learning_rate':
        return True
    knobs = {k for name in OPTIMIZERS for k in accepted_args(name)}
    return key not in knobs or key in accepted_args(optimizer)


def axis_values(points, axis):
    """The values a row's grid points have on one axis, in numeric order where they are numbers, else as tried."""
    values = list(dict.fromkeys(point[axis][1] for point in points))
    try:
        return sorted(values, key=float)
    except ValueError:
        return values


def edges(points, best):
    """[(axis, outer, inner)]: each numeric axis of a row's grid (at least two values tried, every one a positive
    number: a log grid) whose lowest or highest value the best point has, that value and its neighbour."""
    found = []
    for axis, (_, value) in enumerate(best):
        try:
            values = [float(v) for v in axis_values(points, axis)]
        except ValueError:
            continue  # a word ('sampled'): no order to extend
        if len(values) >= 2 and values[0] > 0 and float(value) in (values[0], values[-1]):
            outer = float(value)
            found.append((axis, outer, values[1] if outer == values[0] else values[-2]))
    return found


def grid_value(x):
    """3.3333e-4 -> '3.33e-4': a new grid value, written as grids are."""
    mantissa, exponent = f'{x:.2e}'.split('e')
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def beyond_edges(points, best):
    """The points one step beyond each edge of the grid that best lies on (edges), along that axis only, the others
    at best's values. The step of a log grid is the ratio of its two outermost values on that side: outer² / inner
    (1e-3,3e-3,1e-2 with the best at 1e-3: 3.33e-4). An axis of integers stays one (the value rounded; none if
    that integer was tried already)."""
    new = []
    for axis, outer, inner in edges(points, best):
        tried = [point[axis][1] for point in points]
        x = outer * outer / inner
        if all(v.isdigit() for v in tried):
            if round(x) <= 0 or str(round(x)) in tried:
                continue
            value = str(round(x))
        else:
            value = grid_value(x)
        new.append([(best[axis][0], value) if i == axis else pair for i, pair in enumerate(best)])
    return new


def mean_sd_ci(values):
    """(mean, sd, [low, high]) of values (one per seed): sd with n − 1, the 95% interval mean ± t sd / √n with t
    Student's 0.975 quantile at n − 1 degrees of freedom (the seeds are few); sd and interval None for one value;
    all None if a value is None: a diverged seed is a missing result, not a smaller sample."""
    if not values or any(v is None for v in values):
        return None, None, None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, sd, [mean - half, mean + half]


def speedup(ladder, loss, tokens, seconds):
    """(× tokens, × seconds, beyond) of a run that ended at val loss `loss` after `tokens` and `seconds` of
    training, against ladder: [(tokens, final val loss, seconds)] of the reference run at growing budgets, each a
    whole schedule (Wen et al. 2025). Between two budgets the ladder's loss is linear in log tokens; it uses the
    running minimum of the losses, so that more tokens never do worse. The tokens it needs to reach `loss`, over
    the run's tokens, is the speedup in tokens; its seconds at the same point (linear in log tokens the same way),
    over the run's seconds, the speedup in time. Outside the ladder, the bound and beyond: '>' (the run ends below
    the largest budget's loss) with the largest budget's tokens and seconds, '<' (above the smallest's) with the
    smallest's; beyond None inside."""
    ladder = sorted(ladder)
    floor = list(itertools.accumulate((x for _, x, _ in ladder), min))
    if loss > floor[0]:  # worse than the smallest budget: it would need fewer tokens than that
        return ladder[0][0] / tokens, ladder[0][2] / seconds, '<'
    if loss < floor[-1]:  # better than the largest: more tokens than that
        return ladder[-1][0] / tokens, ladder[-1][2] / seconds, '>'
    k = next(i for i, x in enumerate(floor) if x <= loss)  # the first budget that reaches loss
    if k == 0:
        return ladder[0][0] / tokens, ladder[0][2] / seconds, None
    # floor[k - 1] > loss >= floor[k]: the fraction f of the way from budget k - 1 to k; linear in log tokens is
    # log need = log t0 + f (log t1 - log t0), i.e. need = t0 (t1 / t0)^f
    (t0, _, s0), (t1, _, s1) = ladder[k - 1], ladder[k]
    f = (floor[k - 1] - loss) / (floor[k - 1] - floor[k])
    return t0 * (t1 / t0) ** f / tokens, (s0 + f * (s1 - s0)) / seconds, None


def timing_rows(path, runs):
    """{run name: its row in the timing study's results.json at path} for every name in runs; a ValueError naming
    the runs it lacks."""
    with open(path) as f:
        rows = {r['name']: r for r in json.load(f)['rows'] if r.get('status') == 'ok' and r.get('ms_per_iter')}
    missing = [name for name in runs if name not in rows]
    if missing:
        raise ValueError(f"--timing={path}: no finished timing run named {', '.join(missing)} (it has {list(rows)})")
    return rows


def retime(row, timed):
    """A run's row with its seconds and ms columns from its timing row: time_s = iters x ms/iter, seconds to target
    = steps x ms/iter, the ms breakdown the timing run's (the measured seconds kept as measured_time_s)."""
    ms = timed['ms_per_iter']
    row['measured_time_s'] = row['time_s']
    if row['iters']:
        row['time_s'] = row['iters'] * ms / 1000
    if row['steps_to_target']:
        row['seconds_to_target'] = row['steps_to_target'] * ms / 1000
    row.update({key: timed.get(key) for key, _ in BREAKDOWN})


def summarize(run_dir, returncode, target_loss):
    """One row of the table from a finished run's metrics.jsonl, config.json and train.log."""
    row = dict(status='ok', error=None, final_val_loss=None, best_val_loss=None, final_train_loss=None,
               val_loss_se=None, steps_to_target=None, seconds_to_target=None, iters=None, tokens=None, time_s=None,
               peak_mem_mb=None, **{key: None for key, _ in BREAKDOWN})
    log = os.path.join(run_dir, 'train.log')
    lines = open(log, errors='replace').read().strip().splitlines() if os.path.exists(log) else []
    try:
        records = read_records(run_dir)
    except (FileNotFoundError, ValueError) as e:
        records, row['error'] = [], str(e)
    train, evals = [r for r in records if r.get('kind') == 'train'], [r for r in records if r.get('kind') == 'eval']
    diverged = [r for r in records if r.get('kind') == 'diverged']
    said = [line for line in lines[-LOG_TAIL:] if 'training diverged:' in line]  # train.py's words (or traceback's)
    losses = [r.get('loss') for r in train] + [r.get('val_loss') for r in evals] + \
             [r.get('train_loss') for r in evals]
    if diverged or said or any(x is not None and not finite(x) for x in losses):
        row['status'] = 'diverged'
    elif returncode != 0 or not train:
        row['status'] = 'failed'
    if said or diverged:
        row['error'] = said[-1] if said else \
            f"training diverged: {diverged[-1].get('reason')} (iteration {diverged[-1].get('iter')})"
    elif returncode != 0:  # the run's last words, else why its metrics could not be read
        row['error'] = lines[-1] if lines else row['error'] or f"exit code {returncode}"
    val = [r for r in evals if finite(r.get('val_loss'))]
    if val and row['status'] != 'diverged':
        row['final_val_loss'] = val[-1]['val_loss']
        row['final_train_loss'] = val[-1]['train_loss']
        row['val_loss_se'] = val[-1].get('val_loss_se')
    if val:
        row['best_val_loss'] = min(r['val_loss'] for r in val)
        hit = next((r for r in val if target_loss is not None and r['val_loss'] <= target_loss), None)
        if hit is not None:
            row['steps_to_target'], row['seconds_to_target'] = hit['iter'], hit['time_s']
    if train:
        row['iters'], row['time_s'] = train[-1]['iter'], train[-1]['time_s']
        row.update(median_ms(train))
        memory = [r['peak_mem_mb'] for r in train if finite(r.get('peak_mem_mb'))]
        row['peak_mem_mb'] = max(memory) if memory else None
    c = run_config(run_dir)
    if c is not None and row['iters'] is not None:
        row['tokens'] = row['iters'] * c['gradient_accumulation_steps'] * c['batch_size'] * c['block_size']
    row['git_commit'], row['git_clean'] = (c or {}).get('git_commit'), (c or {}).get('git_clean')  # what it ran
    row['machine'] = (c or {}).get('machine')  # where its seconds were measured (None: a run before this record)
    return row


def run_config(run_dir):
    """The config.json train.py wrote into run_dir (every global), or None."""
    try:
        with open(os.path.join(run_dir, 'config.json')) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# what a run executes (the code a resume must find unchanged): train.py and what it imports, the optimizers and
# kernels, the run configs; not the studies, tests, results or docs
RUN_CODE = ['train.py', 'model.py', 'linear_attention.py', 'checkpoint.py', 'configurator.py', 'data/common.py',
            'optim/*.py', 'kernels/*.py', 'config/*.py']


def code_hash():
    """A hash of the files in RUN_CODE as they are now (committed or not)."""
    digest = hashlib.sha256()
    for path in sorted(p for pattern in RUN_CODE for p in glob.glob(os.path.join(here, pattern))):
        digest.update(os.path.relpath(path, here).encode() + b'\0' + open(path, 'rb').read() + b'\0')
    return digest.hexdigest()


def run_one(args, run_dir, nproc):
    """train.py with args and --out_dir=run_dir; its output goes to run_dir/train.log. Returns the exit code.
    A run stopped part way (killed, or the session ended) goes on from its last checkpoint with --init_from=resume
    when started.json says it had the same arguments, ranks and code (code_hash) and the checkpoint is newer than
    started.json: the same weights and evaluations as a run never stopped (tests/test_train.py; float32 or bfloat16),
    its training seconds the sum of its parts. A checkpoint train.py cannot load or whose config differs (kept as
    ckpt.pt.bad), or code changed since, starts the run over, said in its log (the earlier one kept as
    train.log.prev); any other error of the resume is returned as it is."""
    os.makedirs(run_dir, exist_ok=True)
    started, ckpt, log = (os.path.join(run_dir, name) for name in ('started.json', 'ckpt.pt', 'train.log'))
    this = dict(args=args, nproc=nproc, code=code_hash())
    try:
        with open(started) as f:
            before = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        before = None
    why = None
    same = before is not None and (before.get('args'), before.get('nproc')) == (args, nproc)
    # its checkpoint: written after started.json (an older one is an earlier run's, which train.py --overwrite removes)
    if same and os.path.exists(ckpt) and os.path.getmtime(ckpt) >= os.path.getmtime(started):
        if before.get('code') != this['code']:
            why = "the code it runs (study.RUN_CODE) changed since it stopped"
        else:
            offset = os.path.getsize(log) if os.path.exists(log) else 0
            returncode = train_py(args + ['--init_from=resume'], run_dir, nproc, 'a')
            with open(log, errors='replace') as f:
                f.seek(offset)
                said = f.read()
            if not any(s in said for s in ('cannot be resumed from', "was trained with another run's config")):
                return returncode  # ended, diverged, or failed for another reason (reported as such)
            os.replace(ckpt, ckpt + '.bad')
            why = f"its checkpoint could not be resumed from (exit code {returncode}; kept as ckpt.pt.bad)"
    if why:
        kept = os.path.exists(log)
        if kept:
            os.replace(log, log + '.prev')
        with open(log, 'w') as f:
            f.write(f"study.py: {why}: starting the run over{' (the earlier log: train.log.prev)' * kept}\n")
    if os.path.exists(os.path.join(run_dir, 'run.json')):  # an earlier run's: not to be read as this one's
        os.remove(os.path.join(run_dir, 'run.json'))
    with open(started + '.tmp', 'w') as f:
        json.dump(this, f)
    os.replace(started + '.tmp', started)
    # --overwrite=True: study.py decided to (re)run this trial, so what an earlier, unfinished one left in run_dir goes
    return train_py(args + ['--overwrite=True'], run_dir, nproc, 'a' if why else 'w')


def train_py(args, run_dir, nproc, log_mode):
    """Runs train.py with args and --out_dir=run_dir (under torchrun for nproc > 1); its output goes to (log_mode 'w')
    or after (log_mode 'a') run_dir/train.log. Returns the exit code."""
    command = [sys.executable, os.path.join(here, 'train.py'), *args, f'--out_dir={run_dir}']
    if nproc > 1:
        command[1:1] = ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    with open(os.path.join(run_dir, 'train.log'), log_mode) as log:  # unbuffered: the log's lines in the order written
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, 'PYTHONUNBUFFERED': '1'}).returncode


def finished(run_dir, args, nproc):
    """The exit code of an earlier run in run_dir with the same train.py arguments that ran to its end (exit code 0,
    or a divergence), from the run.json study.py writes after each run; else None (run it)."""
    try:
        with open(os.path.join(run_dir, 'run.json')) as f:
            done = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    same = done.get('args') == args and done.get('nproc') == nproc
    ended = done.get('returncode') == 0 or done.get('status') == 'diverged'
    return done['returncode'] if same and ended else None


def resumed_at(run_dir, reused):
    """The iterations a run went on from after being stopped (run_one): from train.py's 'resuming from' lines in its
    log, or for a run read, not run, from its run.json ([] for one from before this record)."""
    if reused:
        with open(os.path.join(run_dir, 'run.json')) as f:
            return json.load(f).get('resumed_at', [])
    log = os.path.join(run_dir, 'train.log')
    text = open(log, errors='replace').read() if os.path.exists(log) else ''
    return [int(i) for i in re.findall(r'^resuming from .* at iteration (\d+)$', text, re.MULTILINE)]


def keep_records(run_dir, kept):
    """Copies what a run's row is read from into folder kept: metrics.jsonl, config.json, the last LOG_TAIL lines
    of train.log, and run.json last (so that a copy cut short is not taken for a finished run)."""
    os.makedirs(kept, exist_ok=True)
    for name in ('metrics.jsonl', 'config.json'):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(kept, name))
    if os.path.exists(os.path.join(run_dir, 'train.log')):
        with open(os.path.join(run_dir, 'train.log'), errors='replace') as f:
            tail = f.read().splitlines()[-LOG_TAIL:]
        with open(os.path.join(kept, 'train.log'), 'w') as f:
            f.write(''.join(line + '\n' for line in tail))
    shutil.copyfile(os.path.join(run_dir, 'run.json'), os.path.join(kept, 'run.json'))


def cell(row, key, fmt):
    """A row's value as results.md shows it: '—' for none, intervals as [low, high], a * on a difference to the
    reference whose interval leaves 0 out, '>' or '<' before a speedup that is a bound."""
    value = row.get(key)
    if value is None or value == [] or value == {}:
        return '—'
    if key == 'tuned':
        return ', '.join(f'{k}={v}' for k, v in value.items())
    if key == 'grid':
        return '; '.join(f"{k}={','.join(v)}" for k, v in value.items())
    if key == 'edge':
        return ', '.join(value)
    if key.endswith('_ci95'):
        return '[' + ', '.join(fmt.format(v) for v in value) + ']'
    text = fmt.format(value)
    interval = row.get(key[:-len('_mean')] + '_ci95') if key.startswith('diff_to_') else None
    if interval and (interval[0] > 0 or interval[1] < 0):
        text += '*'
    if key in ('speedup_tokens', 'speedup_seconds') and row.get('speedup_beyond'):
        text = f"{row['speedup_beyond']} {text}"
    return text


def markdown(rows, target_loss, trials, seeds=None, reference=None, ladder=None, notes=(), compare_to=(),
             tuned_at_first_seed=True):
    """The table of rows (its optional columns as the study has them), its notes, then every trial when there are
    more trials than rows (a grid, seeds: so that a best value on the grid's edge shows)."""
    columns = [*NAME_COLUMNS, *(GRID_COLUMNS if any(r.get('grid') for r in rows) else []), *LOSS_COLUMNS,
               *(SEED_COLUMNS if seeds else []), *(REFERENCE_COLUMNS if reference else []),
               *[(f'Δ {other}', f'diff_to_{other}_mean', '{:+.4f}') if i == 0 else
                 ('Δ 95% CI', f'diff_to_{other}_ci95', '{:+.4f}') for other in compare_to for i in range(2)],
               *(LADDER_COLUMNS if ladder else []), *RUN_COLUMNS]
    target = f'{target_loss:g}' if target_loss is not None else 'target'
    at_seed = f' at seed {seeds[0]}' if seeds and tuned_at_first_seed else ''
    headers = [h.format(target=target, reference=reference, at_seed=at_seed)
               for h, _, _ in columns]
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
    lines += ['| ' + ' | '.join(cell(row, key, fmt) for _, key, fmt in columns) + ' |' for row in rows]
    for note in notes:
        lines += ['', note]
    if len(trials) > len(rows):
        lines += ['', '| trial | status | final val |', '|---|---|---|']
        for t in trials:
            final = '—' if t['final_val_loss'] is None else f"{t['final_val_loss']:.4f}"
            lines.append(f"| {t['trial']} | {t['status']} | {final} |")
    return '\n'.join(lines) + '\n'


def write_results(folder, table, results):
    """folder/results.md (table) and folder/results.json (results)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'results.md'), 'w') as f:
        f.write(table)
    from checkpoint import git_state  # (imports torch: only once there are results)
    with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump({**results, **git_state()}, f, indent=1)  # and the commit study.py ran from (each run's: its row)


def run_study(train_args, specs, grid, out_dir, target_loss=None, nproc=1, plot=True, jobs=1, rerun=False,
              seeds=None, reference=None, max_grid_extensions=2, ladder=None, ladder_budgets=(1, 2, 4),
              tune_iters=None, results_dir=None, plot_vs=None, compare_to=(), timing=None, runs_from=(),
              tuned_from=None):
    """Runs every spec over the grid at the first seed (the grid extended beyond an edge its best lies on), then
    its best point at every seed (and the ladder's at every budget), `jobs` at a time; each spec goes on as soon as
    its own trials end. A trial that already ran to its end in its folder (OUT/<run>, results_dir/runs/<run>, or
    runs_from's <dir>/runs/<run>) with the same arguments is read, not rerun, unless rerun. Returns (rows: each spec at its best point, trials:
    all of them, the markdown table). results.md and results.json (in results_dir, else out_dir) are rewritten
    after each run (an interrupted study keeps what it has), the plots of the rows' runs are drawn at the end."""
    seeds = list(seeds) if seeds else [None]  # None: the config's seed, no --seed argument
    budgets = sorted({1.0, *map(float, ladder_budgets)}) if ladder else [1.0]
    folder = results_dir or out_dir
    tuned_rows = {}  # run name -> its row in tuned_from's study, whose tuning has ended with a best point
    if tuned_from:
        with open(tuned_from) as f:
            tuned_rows = {r['name']: r for r in json.load(f)['rows'] if r.get('status') != 'pending' and
                          any(loss is not None for loss in r.get('final_val_losses') or [r.get('final_val_loss')])}
    runs = []  # one per row of the table: the spec, and its grid points (the knobs its optimizer takes)
    for spec, overrides in specs:
        optimizer = spec_optimizer(spec, train_args)
        config = spec if spec.endswith('.py') else None
        name = run_name(spec, overrides)
        points = [tuple((k, v) for k, v in point if tuned_here(optimizer, k)) for point in grid]
        if tuned_from:
            if name not in tuned_rows:
                raise ValueError(f"--tuned_from={tuned_from}: no finished row named {name!r} (a row still pending, "
                                 f"or whose every point failed, has no best point; finished: {list(tuned_rows)})")
            source = tuple(tuned_rows[name]['tuned'].items())
            if grid != [()] and {k for k, _ in points[0]} != {k for k, _ in source}:
                raise ValueError(f"--tuned_from={tuned_from}: {name}'s point there, {dict(source)}, does not set the "
                                 f"axes --tune asks for here, {[k for k, _ in points[0]]}")
            points = [source]
        runs.append(dict(name=name, optimizer=optimizer, config=config, overrides=overrides,
                         points=[list(p) for p in dict.fromkeys(points)]))
    by_name = {r['name']: r for r in runs}
    timed = timing_rows(timing, by_name) if timing else {}
    compare_to = [c for c in compare_to if c]
    for setting, value in [('reference', reference), ('ladder', ladder), ('target_loss', target_loss),
                           *[('compare_to', c) for c in compare_to]]:
        if isinstance(value, str) and value not in by_name:
            raise ValueError(f"--{setting}={value}: no run of that name (runs: {list(by_name)})")
    done = {}  # trial name -> its row, as the trials end
    order = {}  # trial name -> (its run's place in runs, when it was planned): results.json's order

    def final_loss(t):
        """A trial's final val loss if it ended well, else None (a seed that diverged or failed has none)."""
        return t['final_val_loss'] if t and t['status'] == 'ok' else None

    def trial(run, point, seed, tag='', length=()):
        """A train.py run of a row's spec at grid point and seed (None: the config's), with length: the train.py
        arguments that set its budget, named by tag."""
        name = ' '.join([run['name'], *[f'{k}={v}' for k, v in point],
                         *([f'seed={seed}'] if seed is not None else []), *([tag] if tag else [])])
        args = [run['config'], *train_args] if run['config'] else [*train_args, f'--optimizer={run["optimizer"]}']
        args += [f'--{k}={v}' for k, v in run['overrides'] + list(point)]
        args += [f'--seed={seed}', f'--data_seed={seed}'] if seed is not None else []
        return dict(name=run['name'], trial=name, optimizer=run['optimizer'], overrides=dict(run['overrides']),
                    tuned=dict(point), seed=seed, args=[*args, *length, f'--wandb_run_name={name}'])

    def tuning(run):
        """(trials to run next, every point tried, the best point) of a row's tuning at the first seed: its grid
        (runs of tune_iters iterations, if set and there is a grid), then rounds of points beyond the edges the best
        lies on, at most max_grid_extensions. The best: the lowest final val loss of the trials that ended well; a
        row of one point has it as its best whatever its first seed did (its other seeds still run)."""
        points = list(run['points'])
        short = [f'max_iters={tune_iters}', [f'--max_iters={tune_iters}', f'--lr_decay_iters={tune_iters}']] \
            if tune_iters and len(points) > 1 else []
        for extension in itertools.count():
            trials = [done.get(t['trial'], t) for t in (trial(run, p, seeds[0], *short) for p in points)]
            todo = [t for t in trials if 'status' not in t]
            if todo:
                return todo, points, None
            ended = [(final_loss(t), i) for i, t in enumerate(trials) if final_loss(t) is not None]
            best = points[min(ended)[1]] if ended else points[0] if len(points) == 1 else None
            more = beyond_edges(points, best) if best is not None and extension < max_grid_extensions else []
            if not more:
                return [], points, best
            points += more

    def at_seeds(run):
        """A row's best point and its full-length trials at every seed (a trial not run yet: None)."""
        _, points, best = tuning(run)
        return points, best, [None if best is None else done.get(trial(run, best, s)['trial']) for s in seeds]

    def rungs(run, best, firsts):
        """{(seed, budget): trial} of the ladder above 1×: the best point with max_iters and lr_decay_iters (from
        the 1× run's config.json) times the budget, for the seeds whose 1× run has ended."""
        out = {}
        for seed, first in zip(seeds, firsts):
            c = first and run_config(first['out_dir'])
            for k in budgets[1:] if c else []:
                length = [f'--{key}={round(k * c[key])}' for key in ('max_iters', 'lr_decay_iters')]
                out[seed, k] = trial(run, best, seed, f'tokens={k:g}x', length)
        return out

    def plan(run):
        """The trials a row needs next: its tuning, then its best point at every seed, and the ladder's rungs."""
        todo, _, best = tuning(run)
        if todo or best is None:
            return todo
        wanted = [trial(run, best, s) for s in seeds]
        if run['name'] == ladder:
            wanted += rungs(run, best, at_seeds(run)[2]).values()
        return [t for t in wanted if t['trial'] not in done]

    def ladder_points():
        """{seed: [(tokens, final val loss, training seconds)] of the ladder's row at each budget}; None for a seed
        where one of them has not ended well."""
        run = by_name[ladder]
        _, best, firsts = at_seeds(run)
        above = rungs(run, best, firsts) if best is not None else {}
        points = {}
        for seed, first in zip(seeds, firsts):
            trials = [first] + [done.get(above[seed, k]['trial']) if (seed, k) in above else None
                                for k in budgets[1:]]
            ended = all(final_loss(t) is not None and t['tokens'] and t['time_s'] for t in trials)
            points[seed] = [(t['tokens'], final_loss(t), t['time_s']) for t in trials] if ended else None
        return points

    def row_of(run):
        """A row: its first seed's full-length trial (else its best point's tuning trial, else the first of its
        trials), its grid, and the statistics over the seeds (mean_sd_ci), paired to the reference's and against the
        ladder."""
        points, best, trials = at_seeds(run)
        mine = sorted((t for t in done.values() if t['name'] == run['name']), key=lambda t: order[t['trial']])
        tuned = [t for t in mine if best is not None and t['tuned'] == dict(best) and t['seed'] == seeds[0]]
        row = dict(trials[0] or (tuned + mine)[0])
        finals = [final_loss(t) for t in trials]
        not_ok = [(s, t) for s, t in zip(seeds, trials) if not t or t['status'] != 'ok']
        if tuning(run)[0] or (best is not None and not_ok and not not_ok[0][1]):
            row['status'], row['error'] = 'pending', None
        elif best is not None and not_ok:  # the first seed that did not end well
            s, t = not_ok[0]
            row['status'] = t['status']
            row['error'] = f"seed {s}: {t['error']}" if s is not None and t['error'] else t['error']
        row['grid'] = {key: axis_values(points, axis) for axis, (key, _) in enumerate(points[0])}
        row['edge'] = [best[axis][0] for axis, _, _ in edges(points, best)] if best is not None else []
        if tuned_from:  # the grid its point was tuned on, and whether it was on that grid's edge
            row['grid'], row['edge'] = tuned_rows[run['name']].get('grid'), tuned_rows[run['name']].get('edge', [])
        row['seeds'], row['final_val_losses'] = seeds, finals
        row['out_dirs'] = [t['out_dir'] for t in trials if t] or [row['out_dir']]
        row['final_val_loss_mean'], row['final_val_loss_sd'], row['final_val_loss_ci95'] = mean_sd_ci(finals)
        row['val_loss_se'] = mean_sd_ci([t and t['val_loss_se'] for t in trials])[0]
        references = [final_loss(t) for t in at_seeds(by_name[reference])[2]] if reference else [None] * len(seeds)
        diffs = [a - b if a is not None and b is not None else None for a, b in zip(finals, references)]
        row['diff_to_reference_mean'], _, row['diff_to_reference_ci95'] = mean_sd_ci(diffs)
        for other in compare_to:
            theirs = [final_loss(t) for t in at_seeds(by_name[other])[2]]
            diffs = [a - b if a is not None and b is not None else None for a, b in zip(finals, theirs)]
            row[f'diff_to_{other}_mean'], _, row[f'diff_to_{other}_ci95'] = mean_sd_ci(diffs)
        ladders = ladder_points() if ladder else {}
        per_seed = [speedup(ladders[s], final_loss(t), t['tokens'], t['time_s'])
                    if ladders.get(s) and final_loss(t) is not None and t['tokens'] and t['time_s'] else None
                    for s, t in zip(seeds, trials)]
        beyond = ''.join(sorted({p[2] for p in per_seed if p and p[2]})) if None not in per_seed else ''
        for i, unit in enumerate(('tokens', 'seconds')):
            mean, _, ci = mean_sd_ci([p and p[i] for p in per_seed])
            row[f'speedup_{unit}'] = None if len(beyond) > 1 else mean
            row[f'speedup_{unit}_ci95'] = None if beyond else ci
            row[f'speedup_{unit}_per_seed'] = [p and p[i] for p in per_seed]
        row['speedup_beyond'] = beyond or None
        return row

    def run(t):
        """Runs trial t (or reads it: an earlier run with the same arguments that ended, in OUT or results_dir)
        and returns its row; with a results_dir, its records are kept there."""
        run_dir = os.path.join(out_dir, t['trial'].replace(' ', '_'))
        kept = os.path.join(results_dir, 'runs', os.path.basename(run_dir)) if results_dir else None
        elsewhere = [os.path.join(d, 'runs', os.path.basename(run_dir)) for d in runs_from]
        source, returncode = run_dir, None
        for where in [] if rerun else filter(None, [run_dir, kept, *elsewhere]):
            returncode = finished(where, t['args'], nproc)
            if returncode is not None:
                source = where
                break
        reused, t0 = returncode is not None, time.time()
        if rerun and os.path.exists(os.path.join(run_dir, 'started.json')):
            os.remove(os.path.join(run_dir, 'started.json'))  # rerun: from the start, nothing resumed
        if not reused:
            returncode = run_one(t['args'], run_dir, nproc)
        row = dict(name=t['name'], trial=t['trial'], optimizer=t['optimizer'], overrides=t['overrides'],
                   tuned=t['tuned'], seed=t['seed'], out_dir=source, returncode=returncode,
                   wall_s=None if reused else time.time() - t0, reused=reused,
                   **summarize(source, returncode, None if isinstance(target_loss, str) else target_loss))
        row['resumed_at'] = resumed_at(source, reused)
        if timed:
            retime(row, timed[t['name']])
        if not reused:
            with open(os.path.join(run_dir, 'run.json'), 'w') as f:
                json.dump(dict(args=t['args'], nproc=nproc, returncode=returncode, status=row['status'],
                               resumed_at=row['resumed_at']), f)
        if kept and source == run_dir:
            keep_records(run_dir, kept)
        return row

    def results(target):
        """(rows, trials, table, results.json's content) of the trials that have ended."""
        trials = sorted(done.values(), key=lambda t: order[t['trial']])
        rows = [row_of(r) for r in runs if any(t['name'] == r['name'] for t in trials)]
        points = ladder_points() if ladder else {}
        notes = []
        if seeds != [None]:
            tuned = f"the first seed ({seeds[0]}) only{f', on runs of {tune_iters} iterations' if tune_iters else ''}"
            notes.append(f"{'' if tuned_from else f'Tuned at {tuned}; '}each run's best point then ran at every seed "
                         f"({', '.join(map(str, seeds))}). final val: the mean over the {len(seeds)} seeds, ± their "
                         f"sd (n − 1), 95% CI: Student t with n − 1 degrees of freedom; eval se: the final "
                         f"evaluation's standard error (sd of its batches / √eval_iters), the mean over the seeds. "
                         f"A seed that diverged leaves its run without a mean. The other columns (best val, steps, "
                         f"seconds, ms) are the first seed's run's.")
        if tuned_from:
            notes.append(f"Not tuned here: each run's point is its row's best point in {tuned_from} (grid and "
                         f"edge: that study's).")
        if timing:
            notes.append(f"Seconds and ms: each run's iterations times the ms/iter its config took alone on the "
                         f"machine ({timing}), not the time it took here.")
        for other in [reference] * bool(reference) + compare_to:
            notes.append(f"Δ {other}: per seed, the run's final val loss − {other}'s at the same seed; the "
                         f"mean and its 95% CI (Student t) over the seeds; * where the interval leaves out 0.")
        if ladder:
            falls = [s for s, p in points.items() if p and any(b >= a for (_, a, _), (_, b, _) in zip(p, p[1:]))]
            notes.append(f"× tokens, × seconds: the tokens (training seconds) {ladder} needs to reach the run's "
                         f"final val loss, over the run's, on {ladder}'s runs at {', '.join(f'{k:g}' for k in budgets)}"
                         f"× its budget at the same seed (its final val loss linear in log tokens between them); "
                         f"the mean and 95% CI over the seeds. '> x': some seed ends below the largest budget's "
                         f"loss, '< x': above the 1× run's; x is then the mean with those seeds at that bound.")
            if falls:
                notes.append(f"{ladder}'s final val loss does not fall with its budget at seed(s) "
                             f"{', '.join(map(str, falls))}: its running minimum is used.")
        at_target = None if isinstance(target, str) else target
        table = markdown(rows, at_target, trials, seeds if seeds != [None] else None, reference, ladder, notes,
                         compare_to, tuned_at_first_seed=not tuned_from)
        ladder_info = ladder and dict(name=ladder, budgets=budgets, seeds=[
            dict(seed=s, tokens=p and [x[0] for x in p], final_val_losses=p and [x[1] for x in p],
                 seconds=p and [x[2] for x in p], monotone=p and s not in falls) for s, p in points.items()])
        return rows, trials, table, dict(train_args=train_args, target_loss=target, seeds=seeds, reference=reference,
                                         tune_iters=tune_iters, max_grid_extensions=max_grid_extensions,
                                         tuned_from=tuned_from, ladder=ladder_info, rows=rows, trials=trials)

    bar = tqdm(total=0, desc='study', unit='run')  # the total grows as the plan does
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        running = {}  # future -> its run's place in runs

        def submit(i):
            for t in plan(runs[i]):
                if t['trial'] not in order:
                    order[t['trial']] = (i, len(order))
                    running[pool.submit(run, t)] = i
                    bar.total += 1
            bar.refresh()

        try:
            for i in range(len(runs)):
                submit(i)
            while running:
                ended, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in ended:
                    i, row = running.pop(future), future.result()
                    done[row['trial']] = row
                    loss = '—' if row['final_val_loss'] is None else f"{row['final_val_loss']:.4f}"
                    bar.write(f"{row['trial']}: {row['status']}, final val loss {loss}" +
                              (f" ({row['error']})" if row['error'] else ''))
                    bar.update()
                    submit(i)
                    write_results(folder, *results(target_loss)[2:])
        except BaseException:  # an error or Ctrl-C: the queued runs do not start
            for future in running:
                future.cancel()
            raise
    bar.close()
    rows, trials, table, content = results(target_loss)
    if isinstance(target_loss, str):  # a run's name: its final val loss (mean over the seeds) is every run's target
        row = next(r for r in rows if r['name'] == target_loss)
        if row['final_val_loss_mean'] is None:  # the results stay, without steps to a target
            print(f"--target_loss={target_loss}: that run has no final val loss ({row['status']}): no target")
        target_loss = row['final_val_loss_mean']
        for t in trials if target_loss is not None else []:
            again = summarize(t['out_dir'], t['returncode'], target_loss)
            t['steps_to_target'], t['seconds_to_target'] = again['steps_to_target'], again['seconds_to_target']
            if timed and t['steps_to_target']:  # seconds from the timing study, as retime() gives them
                t['seconds_to_target'] = t['steps_to_target'] * timed[t['name']]['ms_per_iter'] / 1000
        rows, trials, table, content = results(target_loss)
    write_results(folder, table, content)
    plotted = [r for r in rows if r['out_dirs'] and all(os.path.exists(os.path.join(d, 'metrics.jsonl'))
                                                        for d in r['out_dirs'])]
    if plot and plotted:
        plot_runs([r['out_dirs'] for r in plotted], folder, [r['name'] for r in plotted], target_loss)
    if plot and plot_vs:
        plot_final_vs(rows, plot_vs, folder)
    return rows, trials, table


def listed(value):
    """A study key's list: from the command line a comma-separated string ('' none), from a study file a list."""
    return [v for v in value.split(',') if v] if isinstance(value, str) else list(value)


def study_results_dir(path):
    """results/<name> for a study file config/studies/<name>.py, results/<group>/<name> for
    config/studies/<group>/<name>.py (ablations, scale: where the README's results are); results/<name> for any
    other <name>.py; relative to the current folder."""
    name = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(os.path.abspath(path))
    grouped = os.path.basename(os.path.dirname(folder)) == 'studies'  # config/studies/<group>/<name>.py
    return os.path.join('results', *([os.path.basename(folder)] if grouped else []), name)


def main(argv):
    if '-h' in argv or '--help' in argv:
        print(__doc__.strip())
        return
    opts = dict(optimizers='', runs='', target_loss=None, out_dir='out-study', nproc=1, jobs=1, rerun='False',
                seeds=None, reference=None, max_grid_extensions=2, ladder=None, ladder_budgets='1,2,4',
                tune_iters=None, results_dir=None, plot_vs=None, compare_to='', timing=None, runs_from='',
                tuned_from=None)
    tunes, train_args = [], []
    argv = list(argv)
    study = [a for a in argv if a.endswith('.py') and os.path.isfile(a) and 'runs' in read_py(a)]
    if len(study) > 1:
        raise ValueError(f"one study file at a time, got {study}")
    if study:  # the file's settings first, the command line's after them
        argv.remove(study[0])
        settings = {k: v for k, v in read_py(study[0]).items() if k in STUDY_KEYS}
        if not (isinstance(settings['runs'], list) and all(isinstance(r, str) for r in settings['runs'])):
            raise ValueError(f"{study[0]}: runs must be a list of run specs (strings), got {settings['runs']!r}")
        opts['runs'] = ';'.join(settings.pop('runs'))
        train_args += [str(a) for a in settings.pop('train_args', [])]
        tunes += list(settings.pop('tune', []))
        opts['results_dir'] = study_results_dir(study[0])
        opts.update({k: v for k, v in settings.items() if v is not None})
    while argv:
        arg = argv.pop(0)
        key, sep, value = arg[2:].partition('=') if arg.startswith('--') else ('', '', '')
        if key == 'tune':
            if not sep:  # --tune lr=1e-4,3e-4 (two arguments)
                if not argv:
                    raise ValueError("--tune needs KEY=v1,v2,...")
                value = argv.pop(0)
            tunes.append(value)
        elif key in ('runs', 'optimizers') and sep and opts[key]:
            opts[key] += (';' if key == 'runs' else ',') + value
        elif key in opts and sep:
            opts[key] = value
        else:
            train_args.append(arg)  # a config file or a train.py --key=value
    specs = parse_runs(opts['optimizers'], opts['runs'])
    if not specs:
        raise ValueError("nothing to run: give --optimizers=a,b and/or --runs=\"a:key=value;...\"")
    target_loss = opts['target_loss']
    try:
        target_loss = float(target_loss) if target_loss is not None else None
    except ValueError:
        pass  # a run's name: its final val loss, known at the end
    os.makedirs(opts['out_dir'], exist_ok=True)
    _, _, table = run_study(train_args, specs, parse_tune(tunes), opts['out_dir'], target_loss, int(opts['nproc']),
                        jobs=int(opts['jobs']), rerun=str(opts['rerun']) == 'True',
                        seeds=numbers(opts['seeds'], int), reference=opts['reference'],
                        max_grid_extensions=int(opts['max_grid_extensions']), ladder=opts['ladder'],
                        ladder_budgets=numbers(opts['ladder_budgets'], float),
                        tune_iters=None if opts['tune_iters'] is None else int(opts['tune_iters']),
                        results_dir=opts['results_dir'], plot_vs=opts['plot_vs'],
                        compare_to=listed(opts['compare_to']), timing=opts['timing'],
                        runs_from=listed(opts['runs_from']), tuned_from=opts['tuned_from'])
    print(table)
    print(f"wrote {os.path.join(opts['results_dir'] or opts['out_dir'], 'results.md')}, results.json and the plots")


if __name__ == '__main__':
    main(sys.argv[1:])
