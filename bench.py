"""
Optimizer-vs-optimizer runs on one config: each run is `python train.py CONFIG ... --out_dir=OUT/<run>`, exactly
what a user would type, with the same seed, data order (data_seed) and token budget (max_iters), then a table of
results in OUT/results.md and OUT/results.json, and plots (plot.py) of the runs in OUT.

$ python bench.py config/bench/compare_small.py            # a study file: the README's results
$ python bench.py config/ablations/damping.py --max_iters=100   # an ablation, shortened from the command line
$ python bench.py config/adamw_small.py --optimizers=adamw,muon,fixed_fisher --max_iters=500 --out_dir=out-bench
$ python bench.py config/adamw_small.py --runs="kfac:damping=1e-2;kfac:damping=1e-3" --tune lr=3e-4,1e-3,3e-3

bench.py's own arguments; everything else (config files, --key=value) goes to every run's train.py as written:
  --optimizers=a,b,...   one run per optimizer: --optimizer=a
  --runs="a;b:k=v,k2=v2" runs with overrides of their own, ';' between runs: an optimizer or a config file, then ':'
                         and comma-separated --key=value overrides for that run only. A config file's run is
                         `train.py FILE <the shared arguments> <its overrides>`, named after the file
                         ("kfac_small damping=1e-2"); so give no shared config file with such runs.
  --tune KEY=v1,v2,...   run every run once per value and keep the one with the lowest final val loss, so that
                         no optimizer is compared untuned; KEY is a train.py global (lr means learning_rate);
                         several --tune give the product grid; an optimizer knob is tuned only for the
                         optimizers that take it (--tune damping=... leaves AdamW's runs alone)
  --target_loss=1.9      steps and training seconds to the first evaluation at or below this val loss; a run's
                         name instead (--target_loss=adamw_small) means that run's final val loss (its best trial's)
  --out_dir=out-bench    the root: OUT/<run>/ (train.py's out_dir, and train.log, its output), results, plots
  --nproc=1              ranks per run: above 1, each run goes under torchrun --standalone --nproc_per_node=N
  --jobs=1               runs at a time (each its own process: with OMP_NUM_THREADS=1, one per core)
  --rerun=False          a run that already ran to its end in OUT with the same arguments (OUT/<run>/bench.json)
                         is read, not run again: extend a grid or add runs and only they run; True reruns all

A study file (config/bench/*.py, config/ablations/*.py) is a Python file that sets `runs`: a list of run
specs as above; and optionally train_args (the shared train.py arguments), tune (a list of KEY=v1,v2,...),
target_loss, out_dir, jobs, nproc. Arguments on the command line come after the file's: shared train.py
arguments are appended (so they win), --runs/--optimizers and --tune add to the file's, the others replace.

A run's name is its optimizer (or config file) and overrides ("kfac damping=1e-2 learning_rate=1e-3"), its folder
the same with '_' for ' '. A run that train.py stops as diverged (a {"kind": "diverged"} record in its metrics.jsonl,
a 'training diverged:' line in its log) or whose loss turns NaN or inf is 'diverged', one that exits with an error
otherwise 'failed'; the others go on. Times are train.py's: time_s is training time (evaluation left out),
the ms columns are medians over the train records of ms/iter and of the parts the run logs (train.py: ms_fwd_bwd,
ms_step and peak_mem_mb; the Kronecker optimizers: ms_factors, ms_decomp, ms_precond; they overlap: the factor
hooks run in the backward, decompositions and preconditioning in the step); '—' where a run has none. Runs at the
same time (--jobs above 1) share the machine: compare their times only with each other.

results.json: {"rows": the table's runs (each spec's best trial), "trials": every run, "train_args",
"target_loss"}; a run has name, trial, optimizer, overrides, tuned, status, error, final_val_loss, best_val_loss,
final_train_loss, steps_to_target, seconds_to_target, iters, tokens, time_s, the ms keys, peak_mem_mb, out_dir,
returncode, wall_s (null where unknown or reused) and reused.
"""

import inspect
import itertools
from concurrent.futures import ThreadPoolExecutor, as_completed
import json
import os
import subprocess
import sys
import time

from tqdm import tqdm

from plot import BREAKDOWN, finite, median_ms, plot_runs, read_records

here = os.path.dirname(os.path.abspath(__file__))
ALIASES = {'lr': 'learning_rate'}  # --tune lr=... is the peak learning rate

# results.md's columns: (header, results.json key, format)
COLUMNS = [('run', 'name', '{}'), ('tuned', 'tuned', '{}'), ('status', 'status', '{}'),
           ('final val', 'final_val_loss', '{:.4f}'), ('best val', 'best_val_loss', '{:.4f}'),
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
    from optim import OPTIMIZERS  # torch and the optimizers: seconds to import, so only when tuning
    if optimizer not in OPTIMIZERS or key == 'learning_rate':
        return True
    knobs = {k for f in OPTIMIZERS.values() for k in inspect.signature(f).parameters}
    return key not in knobs or key in inspect.signature(OPTIMIZERS[optimizer]).parameters


def summarize(run_dir, returncode, target_loss):
    """One row of the table from a finished run's metrics.jsonl, config.json and train.log."""
    row = dict(status='ok', error=None, final_val_loss=None, best_val_loss=None, final_train_loss=None,
               steps_to_target=None, seconds_to_target=None, iters=None, tokens=None, time_s=None,
               peak_mem_mb=None, **{key: None for key, _ in BREAKDOWN})
    log = os.path.join(run_dir, 'train.log')
    lines = open(log, errors='replace').read().strip().splitlines() if os.path.exists(log) else []
    try:
        records = read_records(run_dir)
    except (FileNotFoundError, ValueError) as e:
        records, row['error'] = [], str(e)
    train, evals = [r for r in records if r.get('kind') == 'train'], [r for r in records if r.get('kind') == 'eval']
    diverged = [r for r in records if r.get('kind') == 'diverged']
    said = [line for line in lines[-50:] if 'training diverged:' in line]  # train.py's words (or its traceback's)
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
    config_path = os.path.join(run_dir, 'config.json')
    if os.path.exists(config_path) and row['iters'] is not None:
        with open(config_path) as f:
            c = json.load(f)
        row['tokens'] = row['iters'] * c['gradient_accumulation_steps'] * c['batch_size'] * c['block_size']
    return row


def run_one(args, run_dir, nproc):
    """train.py with args and --out_dir=run_dir; its output goes to run_dir/train.log. Returns the exit code."""
    os.makedirs(run_dir, exist_ok=True)
    # --overwrite=True: bench decided to (re)run this trial, so what an earlier, unfinished one left in run_dir goes
    command = [sys.executable, os.path.join(here, 'train.py'), *args, f'--out_dir={run_dir}', '--overwrite=True']
    if nproc > 1:
        command[1:1] = ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    with open(os.path.join(run_dir, 'train.log'), 'w') as log:  # unbuffered: the log's lines in the order written
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, 'PYTHONUNBUFFERED': '1'}).returncode


def finished(run_dir, args, nproc):
    """The exit code of an earlier run in run_dir with the same train.py arguments that ran to its end (exit code 0,
    or a divergence), from the bench.json bench writes after each run; else None (run it)."""
    try:
        with open(os.path.join(run_dir, 'bench.json')) as f:
            done = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    same = done.get('args') == args and done.get('nproc') == nproc
    ended = done.get('returncode') == 0 or done.get('status') == 'diverged'
    return done['returncode'] if same and ended else None


def markdown(rows, target_loss, trials):
    target = f'{target_loss:g}' if target_loss is not None else 'target'
    headers = [h.format(target=target) for h, _, _ in COLUMNS]
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
    for row in rows:
        cells = []
        for _, key, fmt in COLUMNS:
            value = row.get(key)
            if key == 'tuned':
                value = ', '.join(f'{k}={v}' for k, v in value.items()) or None
            cells.append('—' if value is None else fmt.format(value))
        lines.append('| ' + ' | '.join(cells) + ' |')
    if len(trials) > len(rows):  # a tuning grid: every trial, so that a best value on the grid's edge shows
        lines += ['', '| trial | status | final val |', '|---|---|---|']
        for t in trials:
            final = '—' if t['final_val_loss'] is None else f"{t['final_val_loss']:.4f}"
            lines.append(f"| {t['trial']} | {t['status']} | {final} |")
    return '\n'.join(lines) + '\n'


def best_of_each(trials):
    """Each spec's best trial (lowest final val loss among the runs that finished), in the order given; a spec
    none of whose trials finished shows its first."""
    rows = []
    for name in dict.fromkeys(t['name'] for t in trials):
        mine = [t for t in trials if t['name'] == name]
        ok = [t for t in mine if t['status'] == 'ok' and t['final_val_loss'] is not None]
        rows.append(min(ok, key=lambda t: t['final_val_loss']) if ok else mine[0])
    return rows


def write_results(out_dir, train_args, target_loss, rows, trials):
    """out_dir/results.md and results.json; returns the markdown table (a run's name as target: no column yet)."""
    table = markdown(rows, None if isinstance(target_loss, str) else target_loss, trials)
    with open(os.path.join(out_dir, 'results.md'), 'w') as f:
        f.write(table)
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump(dict(train_args=train_args, target_loss=target_loss, rows=rows, trials=trials), f, indent=1)
    return table


def run_target(rows, trials, name):
    """The final val loss of the row called name; every trial's steps and seconds to it filled in."""
    row = next((r for r in rows if r['name'] == name), None)
    if row is None or row['final_val_loss'] is None:
        raise ValueError(f"--target_loss={name}: no run of that name finished (runs: {[r['name'] for r in rows]})")
    target = row['final_val_loss']
    for t in trials:
        if t.get('out_dir'):
            again = summarize(t['out_dir'], t['returncode'], target)
            t['steps_to_target'], t['seconds_to_target'] = again['steps_to_target'], again['seconds_to_target']
    return target


def bench(train_args, specs, grid, out_dir, target_loss=None, nproc=1, plot=True, jobs=1, rerun=False):
    """Runs every spec at every grid point, `jobs` at a time (a trial that already ran to its end in its folder with
    the same arguments is read, not rerun, unless rerun); returns (rows: the best trial per spec, trials: all of
    them, the markdown table). out_dir/results.md and results.json are rewritten after each run (an interrupted
    bench keeps what it has), the plots of the rows' runs are drawn at the end."""
    todo = []  # (name, trial, optimizer, config file or None, overrides, grid point)
    for spec, overrides in specs:
        optimizer = spec_optimizer(spec, train_args)
        config = spec if spec.endswith('.py') else None
        name = ' '.join([os.path.basename(spec)[:-3] if config else spec] + [f'{k}={v}' for k, v in overrides])
        points = [tuple((k, v) for k, v in point if tuned_here(optimizer, k)) for point in grid]
        for point in dict.fromkeys(points):
            trial = ' '.join([name] + [f'{k}={v}' for k, v in point])
            todo.append((name, trial, optimizer, config, overrides, list(point)))
    trials = [dict(trial=t[1]) for t in todo]  # filled in as the runs end, kept in the order given

    def run(name, trial, optimizer, config, overrides, point):
        run_dir = os.path.join(out_dir, trial.replace(' ', '_'))
        args = [config, *train_args] if config else [*train_args, f'--optimizer={optimizer}']
        args += [*[f'--{k}={v}' for k, v in overrides + point], f'--wandb_run_name={trial}']
        t0 = time.time()
        returncode = None if rerun else finished(run_dir, args, nproc)
        reused = returncode is not None
        if not reused:
            returncode = run_one(args, run_dir, nproc)
        row = dict(name=name, trial=trial, optimizer=optimizer, overrides=dict(overrides), tuned=dict(point),
                   out_dir=run_dir, returncode=returncode, wall_s=None if reused else time.time() - t0,
                   reused=reused, **summarize(run_dir, returncode, None if isinstance(target_loss, str) else target_loss))
        if not reused:
            with open(os.path.join(run_dir, 'bench.json'), 'w') as f:
                json.dump(dict(args=args, nproc=nproc, returncode=returncode, status=row['status']), f)
        return row

    rows, table = [], ''
    bar = tqdm(total=len(todo), desc='bench', unit='run')
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        futures = {pool.submit(run, *t): i for i, t in enumerate(todo)}
        for future in as_completed(futures):
            row = trials[futures[future]] = future.result()
            final = '—' if row['final_val_loss'] is None else f"{row['final_val_loss']:.4f}"
            bar.write(f"{row['trial']}: {row['status']}, final val loss {final}" +
                      (f" ({row['error']})" if row['error'] else ''))
            bar.update()
            done = [t for t in trials if 'status' in t]
            rows = best_of_each(done)
            table = write_results(out_dir, train_args, target_loss, rows, done)
    bar.close()
    if isinstance(target_loss, str):  # a run's name: its final val loss is the target of every run
        target_loss = run_target(rows, trials, target_loss)
        table = write_results(out_dir, train_args, target_loss, rows, trials)
    plotted = [r for r in rows if os.path.exists(os.path.join(r['out_dir'], 'metrics.jsonl'))]
    if plot and plotted:
        plot_runs([r['out_dir'] for r in plotted], out_dir, [r['name'] for r in plotted], target_loss)
    return rows, trials, table


def main(argv):
    if '-h' in argv or '--help' in argv:
        print(__doc__.strip())
        return
    opts = dict(optimizers='', runs='', target_loss=None, out_dir='out-bench', nproc=1, jobs=1, rerun='False')
    tunes, train_args = [], []
    argv = list(argv)
    study = [a for a in argv if a.endswith('.py') and os.path.isfile(a) and 'runs' in read_py(a)]
    if len(study) > 1:
        raise ValueError(f"one study file at a time, got {study}")
    if study:  # the file's settings first, the command line's after them
        argv.remove(study[0])
        known = {'runs', 'train_args', 'tune', 'target_loss', 'out_dir', 'jobs', 'nproc'}
        settings = {k: v for k, v in read_py(study[0]).items() if k in known}
        if not (isinstance(settings['runs'], list) and all(isinstance(r, str) for r in settings['runs'])):
            raise ValueError(f"{study[0]}: runs must be a list of run specs (strings), got {settings['runs']!r}")
        opts['runs'] = ';'.join(settings.pop('runs'))
        train_args += [str(a) for a in settings.pop('train_args', [])]
        tunes += list(settings.pop('tune', []))
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
    _, _, table = bench(train_args, specs, parse_tune(tunes), opts['out_dir'], target_loss, int(opts['nproc']),
                        jobs=int(opts['jobs']), rerun=str(opts['rerun']) == 'True')
    print(table)
    print(f"wrote {os.path.join(opts['out_dir'], 'results.md')}, results.json and the plots")


if __name__ == '__main__':
    main(sys.argv[1:])
