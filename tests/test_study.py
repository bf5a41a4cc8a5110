"""study.py and plot.py end to end on CPU (tiny synthetic data, a few iterations), and the study's configs."""
import glob
import json
import math
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import stats

import forkrun
import study
from test_train import REPO, TINY, tiny_data  # noqa: F401 (tiny_data is a fixture)

PLOTS = ['val_loss_vs_steps.png', 'val_loss_vs_seconds.png', 'ms_per_iter_breakdown.png']
FIELDS = {'name', 'optimizer', 'tuned', 'status', 'final_val_loss', 'best_val_loss', 'steps_to_target',
          'seconds_to_target', 'iters', 'tokens', 'time_s', 'ms_per_iter', 'ms_fwd_bwd', 'ms_factors', 'ms_decomp',
          'ms_precond', 'ms_step', 'peak_mem_mb', 'out_dir', 'error'}


def run_study(tiny_data, out_dir, *args, results_dir=None):
    """study.py on the tiny data; its results.json (from results_dir, if given, else out_dir)."""
    command = [os.path.join(REPO, 'study.py'), *TINY, '--dataset=tiny', f'--data_dir={tiny_data}',
               f'--out_dir={out_dir}', *args, *([f'--results_dir={results_dir}'] if results_dir else [])]
    result = forkrun.run(command, cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, f"study.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with open(os.path.join(results_dir or out_dir, 'results.json')) as f:
        return result, json.load(f)


def assert_valid_pngs(folder):
    for name in PLOTS:
        with Image.open(os.path.join(folder, name)) as image:
            assert image.format == 'PNG' and image.size[0] > 100 and image.size[1] > 100
            image.verify()


def test_study_compares_optimizers_and_reports_divergence(tiny_data, tmp_path):
    """adamw and muon on the same data and budget, plus a run whose loss turns NaN: that one is 'diverged' in the
    table, and the others still run and report."""
    result, results = run_study(tiny_data, tmp_path, '--max_iters=6', '--eval_interval=3', '--target_loss=2.6',
                                '--optimizers=adamw,muon', '--runs=adamw:learning_rate=1e30')
    rows = {r['name']: r for r in results['rows']}
    assert list(rows) == ['adamw', 'muon', 'adamw learning_rate=1e30']
    for row in results['rows']:
        assert FIELDS <= row.keys()
    for name in ['adamw', 'muon']:
        row = rows[name]
        assert row['status'] == 'ok' and row['error'] is None and row['iters'] == 6
        assert row['final_val_loss'] < 2.6 and row['best_val_loss'] <= row['final_val_loss']
        assert row['steps_to_target'] in (3, 6) and row['seconds_to_target'] >= 0
        assert row['tokens'] == 6 * 2 * 4 * 16  # iterations x micro-steps x batch x block: the same budget
        assert row['ms_per_iter'] > 0 and row['ms_fwd_bwd'] > 0 and row['ms_step'] > 0 and row['peak_mem_mb'] > 0
        assert row['ms_factors'] is None  # no Kronecker factors in these runs
    diverged = rows['adamw learning_rate=1e30']
    assert diverged['status'] == 'diverged' and diverged['final_val_loss'] is None
    assert 'diverged' in diverged['error']
    with open(os.path.join(tmp_path, 'muon', 'config.json')) as f:
        assert json.load(f)['optimizer'] == 'muon'

    table = open(os.path.join(tmp_path, 'results.md')).read()
    lines = table.splitlines()
    assert lines[0].startswith('| run | tuned | status | final val |') and 'steps to 2.6' in lines[0]
    assert len(lines) == 2 + 3 and lines[4].startswith('| adamw learning_rate=1e30 | — | diverged | — |')
    assert table in result.stdout  # printed too
    assert_valid_pngs(tmp_path)


def write_run(run_dir, records, log, tail='', **config):
    """A train.py out_dir as study.py reads it: config.json (batch 2 x 8 tokens, and config), metrics.jsonl (records,
    then tail, e.g. a torn line) and train.log."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'config.json'), 'w') as f:
        json.dump(dict(gradient_accumulation_steps=1, batch_size=2, block_size=8, **config), f)
    with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in records) + tail)
    with open(os.path.join(run_dir, 'train.log'), 'w') as f:
        f.write(log)


def arg(args, key, default=None):
    """The last --key=value of a train.py command line (the one train.py keeps)."""
    values = [a.split('=', 1)[1] for a in args if a.startswith(f'--{key}=')]
    return values[-1] if values else default


def fake_train(final_loss, seconds_per_iter=lambda args: 0.01):
    """A stand-in for train.py in study.run_one: max_iters (default 4) train records, evaluations at 0 and at the
    end, the final val loss final_loss(args); None diverges as train.py did (a NaN train record, an error, exit
    code 1). It leaves a checkpoint, as train.py does, and 60 lines of log."""
    def run_one(args, run_dir, nproc):
        iters, final = int(arg(args, 'max_iters', 4)), final_loss(args)
        dt = seconds_per_iter(args)
        records = [dict(kind='eval', iter=0, train_loss=3.0, val_loss=3.0, val_loss_se=0.1, time_s=0.0)]
        records += [dict(kind='train', iter=i, loss=float('nan') if final is None else 3 - i * (3 - final) / iters,
                         lr=1e-3, ms_per_iter=10.0 + i, tokens_per_s=1600.0, time_s=dt * i, ms_fwd_bwd=6.0,
                         ms_step=3.0, ms_factors=1.0, ms_decomp=0.5, ms_precond=1.5, peak_mem_mb=100.0 + i)
                    for i in range(1, iters + 1)]
        if final is not None:
            records.append(dict(kind='eval', iter=iters, train_loss=final, val_loss=final,
                                val_loss_se=0.01 * float(arg(args, 'seed', 1)), time_s=dt * iters))
        log = ''.join(f'iter {i}\n' for i in range(60))
        log += "FloatingPointError: training diverged: the loss is nan at iteration 1\n" if final is None else "done\n"
        write_run(run_dir, records, log, max_iters=iters, lr_decay_iters=int(arg(args, 'lr_decay_iters', iters)),
                  seed=int(arg(args, 'seed', 1337)), data_seed=int(arg(args, 'data_seed', 1337)))
        open(os.path.join(run_dir, 'ckpt.pt'), 'wb').close()
        return 1 if final is None else 0
    return run_one


def lr_loss(args):
    """|log10(lr) + 2| + 1: lr=1e-2 is the best; an lr above 1 diverges."""
    lr = float(arg(args, 'learning_rate'))
    return None if lr > 1 else abs(math.log10(lr) + 2) + 1


fake_run = fake_train(lr_loss)


def record_runs(monkeypatch, train=fake_run):
    """study.run_one replaced by train (a fake_train): returns the list each run's train.py arguments go to."""
    calls = []

    def recording_run(args, run_dir, nproc):
        calls.append(args)
        return train(args, run_dir, nproc)

    monkeypatch.setattr(study, 'run_one', recording_run)
    return calls


def test_tune_keeps_each_optimizers_best_and_plot_cli(tmp_path, monkeypatch):
    """--tune lr=... runs the grid per optimizer and keeps the lowest final val loss; a diverged grid point is never
    the best; a knob the optimizer does not take is not tuned; a best on a numeric axis' edge (kfac's damping, where
    every value ties: the first stays the best) gets one point beyond it. plot.py plots every trial, the diverged
    one too, and a comma-joined group of folders as one run."""
    monkeypatch.setattr(study, 'run_one', fake_run)
    monkeypatch.chdir(tmp_path)
    study.main(['config/adamw_small.py', '--optimizers=adamw,kfac', '--out_dir=out', '--target_loss=1.5',
                '--tune', 'lr=1e30,1e-3,1e-2', '--tune=damping=1e-3,1e-2'])  # adamw takes no damping
    with open(tmp_path / 'out' / 'results.json') as f:
        results = json.load(f)
    trials = [(t['trial'], t['status']) for t in results['trials']]
    assert trials[:3] == [('adamw learning_rate=1e30', 'diverged'), ('adamw learning_rate=1e-3', 'ok'),
                          ('adamw learning_rate=1e-2', 'ok')]
    assert len(trials) == 3 + 6 + 1 and trials[3] == ('kfac learning_rate=1e30 damping=1e-3', 'diverged')
    assert trials[-1] == ('kfac learning_rate=1e-2 damping=1e-4', 'ok')  # 1e-3 * 1e-3 / 1e-2: one step below
    adamw, kfac = results['rows']
    assert adamw['tuned'] == {'learning_rate': '1e-2'} and adamw['final_val_loss'] == 1.0
    assert kfac['tuned'] == {'learning_rate': '1e-2', 'damping': '1e-3'} and kfac['edge'] == []
    assert kfac['grid'] == {'learning_rate': ['1e-3', '1e-2', '1e30'], 'damping': ['1e-4', '1e-3', '1e-2']}
    assert adamw['grid'] == {'learning_rate': ['1e-3', '1e-2', '1e30']}
    assert adamw['steps_to_target'] == 4 and adamw['tokens'] == 4 * 16 and adamw['peak_mem_mb'] == 104.0
    assert adamw['ms_per_iter'] == 12.5 and adamw['ms_factors'] == 1.0  # medians over the train records
    assert 'training diverged' in results['trials'][0]['error']
    table = open(tmp_path / 'out' / 'results.md').read()
    assert '| adamw | learning_rate=1e-2 | learning_rate=1e-3,1e-2,1e30 | — | ok | 1.0000 | 1.0000 | 4 | 0.0 | 4 | ' \
           '0.0 | 12.5 | 6.0 | 1.0 |' in table
    assert '| adamw learning_rate=1e30 | diverged | — |' in table  # the grid's trials, below the table
    assert_valid_pngs(tmp_path / 'out')

    out = tmp_path / 'plots'
    dirs = [t['out_dir'] for t in results['trials']]
    result = forkrun.run([os.path.join(REPO, 'plot.py'), *dirs, ','.join(dirs[1:3]), f'--out={out}',
                          '--target_loss=2.0'], cwd=str(tmp_path), env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert_valid_pngs(out)


def test_study_file_with_config_runs_and_parallel_jobs(tmp_path, monkeypatch):
    """A study file sets runs (an optimizer with overrides, a config file), the shared train.py arguments, a tuning
    grid and jobs; the command line adds to it. A config file's run is train.py FILE <shared> <overrides>, named
    after the file and tuned as its optimizer; runs at the same time still land in the table in the order given.
    A study's results go to results/<study> (relative to the current folder), its checkpoints to its out_dir."""
    calls = record_runs(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'my_adamw.py').write_text("optimizer = 'adamw'\nlearning_rate = 3e-3\n")
    (tmp_path / 'study.py').write_text(
        "runs = ['my_adamw.py', 'kfac:damping=1e-2']\ntrain_args = ['--max_iters=4', '--eval_interval=2']\n"
        "tune = ['lr=1e-3,1e-2']\njobs = 2\nout_dir = 'out-study'\ntarget_loss = 'my_adamw'\n"
        "max_grid_extensions = 0\n")
    study.main(['study.py', '--runs=eva', '--eval_interval=4', '--tune=damping=1e-1,1'])
    assert not os.path.exists(tmp_path / 'out-study' / 'results.json')
    assert os.path.exists(tmp_path / 'out-study' / 'my_adamw_learning_rate=1e-3' / 'ckpt.pt')
    with open(tmp_path / 'results' / 'study' / 'results.json') as f:
        results = json.load(f)
    assert [t['trial'] for t in results['trials']] == [
        'my_adamw learning_rate=1e-3', 'my_adamw learning_rate=1e-2',  # adamw takes no damping: not tuned
        *[f'kfac damping=1e-2 learning_rate={lr} damping={d}' for lr in ('1e-3', '1e-2') for d in ('1e-1', '1')],
        *[f'eva learning_rate={lr} damping={d}' for lr in ('1e-3', '1e-2') for d in ('1e-1', '1')]]
    assert [r['name'] for r in results['rows']] == ['my_adamw', 'kfac damping=1e-2', 'eva']
    assert results['rows'][0]['optimizer'] == 'adamw' and results['rows'][0]['tuned'] == {'learning_rate': '1e-2'}
    # target_loss = 'my_adamw': that run's best final val loss (1.0 at lr 1e-2); lr 1e-3 (final 2.0) never gets there
    assert results['target_loss'] == 1.0
    assert [(t['trial'], t['steps_to_target']) for t in results['trials'][:2]] == [
        ('my_adamw learning_rate=1e-3', None), ('my_adamw learning_rate=1e-2', 4)]
    assert results['train_args'] == ['--max_iters=4', '--eval_interval=2', '--eval_interval=4']
    mine = next(a for a in calls if a[0] == 'my_adamw.py' and '--learning_rate=1e-3' in a)
    assert mine[1:4] == ['--max_iters=4', '--eval_interval=2', '--eval_interval=4']  # the file, then the shared
    assert not any(a.startswith('--optimizer=') for a in mine)
    kfac = next(a for a in calls if '--optimizer=kfac' in a)
    assert kfac.index('--damping=1e-2') < kfac.index('--learning_rate=1e-3')  # overrides, then the grid point
    assert len(calls) == 10
    # the same study with one run more: only its two trials run, the others are read from their folders
    study.main(['study.py', '--runs=eva', '--eval_interval=4', '--tune=damping=1e-1,1', '--runs=soap'])
    assert len(calls) == 12 and all('--optimizer=soap' in a for a in calls[10:])
    with open(tmp_path / 'results' / 'study' / 'results.json') as f:
        again = json.load(f)
    assert [r['name'] for r in again['rows']] == ['my_adamw', 'kfac damping=1e-2', 'eva', 'soap']
    assert [t['reused'] for t in again['trials']] == [True] * 10 + [False] * 2
    assert [t['final_val_loss'] for t in again['trials'][:10]] == [t['final_val_loss'] for t in results['trials']]


SEED_FIELDS = {'seeds', 'final_val_losses', 'final_val_loss_mean', 'final_val_loss_sd', 'final_val_loss_ci95',
               'diff_to_reference_mean', 'diff_to_reference_ci95', 'val_loss_se', 'grid', 'tuned', 'edge', 'out_dirs',
               'speedup_tokens', 'speedup_seconds', 'speedup_tokens_ci95', 'speedup_seconds_ci95', 'speedup_beyond',
               'speedup_tokens_per_seed', 'speedup_seconds_per_seed'}


def interval(values):
    """mean ± t(0.975, n − 1) sd / √n, by hand."""
    values = np.array(values)
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return [values.mean() - half, values.mean() + half]


def test_seeds_reference_and_ladder_end_to_end(tiny_data, tmp_path):
    """Real train.py runs: adamw and muon at seeds 1 and 2 (the first seed's runs get --seed and --data_seed too),
    adamw also at twice the budget (the ladder). Each row's mean, sd, interval and paired difference to adamw equal
    a computation from its per-seed finals; its eval se is the mean of the final evaluations' val_loss_se; adamw's
    speedup against its own ladder is 1. Results, plots (a line and band per row) and the kept records go to
    results_dir, the checkpoints stay in out_dir."""
    results_dir = tmp_path / 'results'
    result, results = run_study(tiny_data, tmp_path / 'out', '--max_iters=6', '--eval_interval=3',
                                '--optimizers=adamw,muon', '--seeds=1,2', '--reference=adamw', '--ladder=adamw',
                                '--ladder_budgets=1,2', results_dir=results_dir)
    trials = {t['trial']: t for t in results['trials']}
    assert list(trials) == ['adamw seed=1', 'adamw seed=2', 'adamw seed=1 tokens=2x', 'adamw seed=2 tokens=2x',
                            'muon seed=1', 'muon seed=2']
    for t in trials.values():
        with open(os.path.join(t['out_dir'], 'config.json')) as f:
            c = json.load(f)
        assert c['seed'] == c['data_seed'] == t['seed'] and t['status'] == 'ok'
        budget = 2 if t['trial'].endswith('tokens=2x') else 1
        assert (c['max_iters'], c['lr_decay_iters'], c['warmup_iters']) == (6 * budget, 20 * budget, 2)
        assert t['iters'] == 6 * budget and t['val_loss_se'] > 0
    adamw, muon = results['rows']
    assert (adamw['name'], muon['name']) == ('adamw', 'muon')
    for row in results['rows']:
        assert SEED_FIELDS | FIELDS <= row.keys() and row['seeds'] == [1, 2]
        mine = [trials[f"{row['name']} seed={s}"] for s in (1, 2)]
        finals = [t['final_val_loss'] for t in mine]
        assert row['final_val_losses'] == finals and finals[0] != finals[1]  # the seeds differ
        assert row['final_val_loss_mean'] == pytest.approx(np.mean(finals))
        assert row['final_val_loss_sd'] == pytest.approx(np.std(finals, ddof=1))
        assert row['final_val_loss_ci95'] == pytest.approx(interval(finals))
        diffs = [a - b for a, b in zip(finals, adamw['final_val_losses'])]
        assert row['diff_to_reference_mean'] == pytest.approx(np.mean(diffs))
        assert row['diff_to_reference_ci95'] == pytest.approx(interval(diffs))
        assert row['val_loss_se'] == pytest.approx(np.mean([t['val_loss_se'] for t in mine]))
        assert row['trial'] == f"{row['name']} seed=1" and row['out_dirs'] == [t['out_dir'] for t in mine]
    assert adamw['diff_to_reference_mean'] == 0 and adamw['diff_to_reference_ci95'] == [0, 0]
    assert adamw['speedup_tokens_per_seed'] == [1, 1] and adamw['speedup_seconds_per_seed'] == [1, 1]
    assert len(muon['speedup_tokens_per_seed']) == 2 and results['ladder']['budgets'] == [1, 2]
    assert [s['seed'] for s in results['ladder']['seeds']] == [1, 2]
    table = open(results_dir / 'results.md').read()
    assert '| run | tuned at seed 1 | status | final val | ± sd | 95% CI | eval se | Δ adamw | Δ 95% CI | ' \
           '× tokens' in table and 'Tuned at the first seed (1) only' in table
    assert_valid_pngs(results_dir)
    assert not os.path.exists(tmp_path / 'out' / 'results.json')
    for t in trials.values():  # each run's records kept, no checkpoint; the checkpoint where it ran
        kept = results_dir / 'runs' / t['trial'].replace(' ', '_')
        assert sorted(os.listdir(kept)) == ['config.json', 'metrics.jsonl', 'run.json', 'train.log']
        assert os.path.exists(os.path.join(t['out_dir'], 'ckpt.pt'))


def lr_damping_loss(args):
    """lr_loss plus |log10(damping) + 1| where the run has a damping: the best is lr 1e-2, damping 1e-1."""
    damping = arg(args, 'damping')
    return lr_loss(args) + (abs(math.log10(float(damping)) + 1) if damping else 0)


def test_grid_extends_beyond_its_edges(tmp_path, monkeypatch):
    """Best at the grid's edge: one point one step further out along that axis (the ratio of the two outermost
    values), the other axes at the best's values, until the best is inside, at most max_grid_extensions rounds;
    a best still on the edge after them is flagged."""
    monkeypatch.setattr(study, 'run_one', fake_train(lr_damping_loss))
    monkeypatch.chdir(tmp_path)
    grid = ['--tune', 'lr=1e-4,1e-3', '--tune', 'damping=1e-1,1']
    study.main(['--optimizers=kfac,adamw', '--out_dir=out', *grid])
    with open(tmp_path / 'out' / 'results.json') as f:
        results = json.load(f)
    assert [t['trial'] for t in results['trials']] == [
        *[f'kfac learning_rate={lr} damping={d}' for lr in ('1e-4', '1e-3') for d in ('1e-1', '1')],
        'kfac learning_rate=1e-2 damping=1e-1', 'kfac learning_rate=1e-3 damping=1e-2',  # round 1: both edges
        'kfac learning_rate=1e-1 damping=1e-1',  # round 2: lr=1e-2 is the best, on the edge again
        'adamw learning_rate=1e-4', 'adamw learning_rate=1e-3', 'adamw learning_rate=1e-2', 'adamw learning_rate=1e-1']
    kfac, adamw = results['rows']
    assert kfac['tuned'] == {'learning_rate': '1e-2', 'damping': '1e-1'} and kfac['final_val_loss'] == 1.0
    assert kfac['grid'] == {'learning_rate': ['1e-4', '1e-3', '1e-2', '1e-1'], 'damping': ['1e-2', '1e-1', '1']}
    assert adamw['tuned'] == {'learning_rate': '1e-2'} and kfac['edge'] == adamw['edge'] == []

    study.main(['--optimizers=kfac,adamw', '--out_dir=out1', '--max_grid_extensions=1', *grid])
    with open(tmp_path / 'out1' / 'results.json') as f:
        results = json.load(f)
    assert len(results['trials']) == 6 + 3
    kfac, adamw = results['rows']
    assert kfac['tuned'] == {'learning_rate': '1e-2', 'damping': '1e-1'} and kfac['edge'] == ['learning_rate']
    assert adamw['tuned'] == {'learning_rate': '1e-2'} and adamw['edge'] == ['learning_rate']
    table = open(tmp_path / 'out1' / 'results.md').read()
    assert '| adamw | learning_rate=1e-2 | learning_rate=1e-4,1e-3,1e-2 | learning_rate | ok | 1.0000 |' in table


def test_beyond_edges_steps_along_one_axis():
    def points(*values):
        return [[('learning_rate', v), ('fisher', 'empirical')] for v in values]
    grid = points('1e-3', '3e-3', '1e-2')
    assert study.beyond_edges(grid, grid[0]) == points('3.33e-4')  # 1e-3 / (3e-3 / 1e-3)
    assert study.beyond_edges(grid, grid[2]) == points('3.33e-2')
    assert study.beyond_edges(grid, grid[1]) == [] and study.beyond_edges(grid[:1], grid[0]) == []
    words = [[('fisher', 'empirical')], [('fisher', 'sampled')]]
    assert study.beyond_edges(words, words[0]) == []
    ints = [[('factor_update_freq', v)] for v in ('5', '10')]
    assert study.beyond_edges(ints, ints[0]) == [[('factor_update_freq', '2')]]  # 2.5, an integer axis: 2
    assert study.beyond_edges(ints, ints[1]) == [[('factor_update_freq', '20')]]
    two = [[('learning_rate', lr), ('damping', d)] for lr in ('1e-3', '1e-2') for d in ('1e-2', '1e-1', '1')]
    assert study.beyond_edges(two, two[1]) == [[('learning_rate', '1e-4'), ('damping', '1e-1')]]
    assert study.beyond_edges(two, two[5]) == [[('learning_rate', '1e-1'), ('damping', '1')],
                                               [('learning_rate', '1e-2'), ('damping', '1e1')]]


def seeded_loss(args):
    """lr_loss plus 0.01 x seed; muon diverges at seed 2."""
    if arg(args, 'optimizer') == 'muon' and arg(args, 'seed') == '2':
        return None
    return lr_loss(args) + 0.01 * int(arg(args, 'seed', 0))


def test_tune_iters_and_a_diverged_seed(tmp_path, monkeypatch):
    """--tune_iters: the grid at the first seed on runs of that many iterations (a whole schedule), then the best
    point at the full length at every seed. A seed that diverges leaves its row without a mean, flagged."""
    calls = record_runs(monkeypatch, fake_train(seeded_loss))
    monkeypatch.chdir(tmp_path)
    study.main(['--optimizers=adamw,muon', '--out_dir=out', '--max_iters=4', '--tune', 'lr=1e-3,1e-2,1e-1',
                '--tune_iters=2', '--seeds=1,2', '--reference=adamw'])
    with open(tmp_path / 'out' / 'results.json') as f:
        results = json.load(f)
    assert [t['trial'] for t in results['trials']][:5] == [
        'adamw learning_rate=1e-3 seed=1 max_iters=2', 'adamw learning_rate=1e-2 seed=1 max_iters=2',
        'adamw learning_rate=1e-1 seed=1 max_iters=2', 'adamw learning_rate=1e-2 seed=1',
        'adamw learning_rate=1e-2 seed=2']
    short = [a for a in calls if '--optimizer=adamw' in a][:3]
    assert all(a[-3:-1] == ['--max_iters=2', '--lr_decay_iters=2'] and '--seed=1' in a for a in short)
    full = [a for a in calls if '--optimizer=adamw' in a][3:]
    assert [(arg(a, 'max_iters'), arg(a, 'seed'), arg(a, 'data_seed')) for a in full] == [('4', '1', '1'),
                                                                                         ('4', '2', '2')]
    adamw, muon = results['rows']
    assert adamw['iters'] == 4 and adamw['final_val_losses'] == pytest.approx([1.01, 1.02])
    assert adamw['tuned'] == {'learning_rate': '1e-2'} and adamw['final_val_loss_mean'] == pytest.approx(1.015)
    assert muon['final_val_losses'] == [pytest.approx(1.01), None] and muon['status'] == 'diverged'
    assert muon['error'].startswith('seed 2: ') and 'training diverged' in muon['error']
    for key in ('final_val_loss_mean', 'final_val_loss_sd', 'final_val_loss_ci95', 'diff_to_reference_mean',
                'diff_to_reference_ci95'):
        assert muon[key] is None
    table = open(tmp_path / 'out' / 'results.md').read()
    assert '| muon | learning_rate=1e-2 | learning_rate=1e-3,1e-2,1e-1 | — | diverged | — |' in table
    assert 'on runs of 2 iterations' in table


def test_a_pending_row_shows_its_best_point(tmp_path, monkeypatch):
    """Mid-study (results.json is rewritten as each run ends), a row whose tuning has ended and whose full-length
    runs have not shows its best point and that point's tuning run, not the grid's first point."""
    def stopped_at_full_length(args, run_dir, nproc):
        if arg(args, 'max_iters') == '4':
            raise Interrupted
        return fake_run(args, run_dir, nproc)

    monkeypatch.setattr(study, 'run_one', stopped_at_full_length)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Interrupted):
        study.main(['--optimizers=adamw', '--out_dir=out', '--max_iters=4', '--tune', 'lr=1e-3,1e-2,1e-1',
                    '--tune_iters=2', '--jobs=1'])
    with open(tmp_path / 'out' / 'results.json') as f:
        row, = json.load(f)['rows']
    assert row['status'] == 'pending' and row['tuned'] == {'learning_rate': '1e-2'}  # lr_loss: 1e-2 is the best
    assert row['iters'] == 2 and row['best_val_loss'] == pytest.approx(1.0)  # its tuning run's figures
    assert '| adamw | learning_rate=1e-2 |' in open(tmp_path / 'out' / 'results.md').read()


def test_tuned_from_runs_each_rows_best_point_from_another_study(tmp_path, monkeypatch):
    """--tuned_from: a study at another length (here 2 iterations, tuned) gives each run its best point there; the
    longer study runs only that point at each seed, with no grid of its own; a run it has no row for is an error."""
    calls = record_runs(monkeypatch)
    monkeypatch.chdir(tmp_path)
    study.main(['--optimizers=adamw,kfac', '--out_dir=short', '--max_iters=2', '--tune', 'lr=1e-3,1e-2,1e-1',
                '--tune', 'damping=1e-1,1'])
    tuned = {r['name']: r['tuned'] for r in json.load(open(tmp_path / 'short' / 'results.json'))['rows']}
    assert tuned == {'adamw': {'learning_rate': '1e-2'}, 'kfac': {'learning_rate': '1e-2', 'damping': '1e-1'}}
    calls.clear()
    study.main(['--optimizers=adamw,kfac', '--out_dir=long', '--max_iters=8', '--tune', 'lr=1e-3,1e-2,1e-1',
                '--tune', 'damping=1e-1,1', '--seeds=1,2', '--tuned_from=short/results.json'])
    assert sorted((arg(a, 'optimizer'), arg(a, 'learning_rate'), arg(a, 'damping'), arg(a, 'seed'), arg(a, 'max_iters'))
                  for a in calls) == [('adamw', '1e-2', None, '1', '8'), ('adamw', '1e-2', None, '2', '8'),
                                      ('kfac', '1e-2', '1e-1', '1', '8'), ('kfac', '1e-2', '1e-1', '2', '8')]
    results = json.load(open(tmp_path / 'long' / 'results.json'))
    assert results['tuned_from'] == 'short/results.json' and [r['tuned'] for r in results['rows']] == list(tuned.values())
    table = open(tmp_path / 'long' / 'results.md').read()
    assert "its row's best point in short/results.json" in table and 'Tuned at' not in table
    assert '| kfac | learning_rate=1e-2, damping=1e-1 | learning_rate=1e-3,1e-2,1e-1; damping=' in table  # short's grid
    with pytest.raises(ValueError, match="no finished row named 'muon'"):
        study.main(['--optimizers=muon', '--out_dir=long', '--tuned_from=short/results.json'])
    with pytest.raises(ValueError, match="does not set the axes"):  # a point of lr and damping, asked for beta2
        study.main(['--optimizers=kfac', '--out_dir=long', '--tune', 'beta2=0.95,0.99',
                    '--tuned_from=short/results.json'])
    rows = json.load(open(tmp_path / 'short' / 'results.json'))
    rows['rows'][1]['status'] = 'pending'  # a source study still running: kfac has no best point yet
    (tmp_path / 'running.json').write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="no finished row named 'kfac'"):
        study.main(['--optimizers=kfac', '--out_dir=long', '--tuned_from=running.json'])


class Interrupted(Exception):
    pass


def test_restarted_study_reads_its_kept_runs(tmp_path, monkeypatch):
    """A study interrupted mid-way keeps each ended run's records in results_dir/runs/<run>/ (no checkpoint, the
    log's last 50 lines); restarted on another machine (out_dir gone) it runs only what is missing, and a third
    time nothing at all, with the same results."""
    calls = []

    def interrupted_run(args, run_dir, nproc):
        if len(calls) == 2:  # the third run is killed half-way: records, no end
            write_run(run_dir, [dict(kind='eval', iter=0, train_loss=3.0, val_loss=3.0, time_s=0.0)], "iter 0\n")
            raise Interrupted
        calls.append(arg(args, 'wandb_run_name'))
        return fake_train(seeded_loss)(args, run_dir, nproc)

    monkeypatch.chdir(tmp_path)
    (tmp_path / 'study.py').write_text(
        "runs = ['adamw', 'soap']\ntrain_args = ['--max_iters=4']\ntune = ['lr=1e-3,1e-2,1e-1']\n"
        "seeds = [1, 2]\nreference = 'adamw'\nout_dir = 'out'\nresults_dir = 'kept'\n")
    monkeypatch.setattr(study, 'run_one', interrupted_run)
    with pytest.raises(Interrupted):
        study.main(['study.py'])
    ran = list(calls)
    assert sorted(os.listdir(tmp_path / 'kept' / 'runs')) == sorted(t.replace(' ', '_') for t in ran)
    kept = tmp_path / 'kept' / 'runs' / ran[0].replace(' ', '_')
    assert sorted(os.listdir(kept)) == ['config.json', 'metrics.jsonl', 'run.json', 'train.log']
    log = open(kept / 'train.log').read().splitlines()
    assert len(log) == 50 and log[-1] == 'done'

    def recording_run(args, run_dir, nproc):
        calls.append(arg(args, 'wandb_run_name'))
        return fake_train(seeded_loss)(args, run_dir, nproc)

    monkeypatch.setattr(study, 'run_one', recording_run)
    shutil.rmtree(tmp_path / 'out')
    study.main(['study.py'])
    with open(tmp_path / 'kept' / 'results.json') as f:
        results = json.load(f)
    assert len(results['trials']) == 8 and len(calls) == 8 and not set(calls[len(ran):]) & set(ran)
    assert [t['trial'] for t in results['trials'] if t['reused']] == ran
    assert all(t['out_dir'] == os.path.join('kept', 'runs', t['trial'].replace(' ', '_'))
               for t in results['trials'] if t['reused'])
    shutil.rmtree(tmp_path / 'out')
    study.main(['study.py'])
    assert len(calls) == 8  # nothing ran
    with open(tmp_path / 'kept' / 'results.json') as f:
        again = json.load(f)
    varies = {'out_dir', 'out_dirs', 'reused', 'wall_s'}
    assert [{k: v for k, v in r.items() if k not in varies} for r in again['rows']] == \
           [{k: v for k, v in r.items() if k not in varies} for r in results['rows']]
    assert all(t['reused'] for t in again['trials']) and os.path.exists(tmp_path / 'kept' / 'results.md')



def test_a_stopped_run_goes_on_from_its_checkpoint(tiny_data, tmp_path, monkeypatch):
    """study.run_one with train.py, dropout on: a run stopped part way (checkpoint at iteration 4, records to 6, as
    if killed at 6) goes on from that checkpoint when run again with the same arguments and code: the same train
    losses and evaluations as a run never stopped; resumed_at says where. A damaged checkpoint, or changed code,
    starts it over (said in its log); a live run's lock is an error that leaves the checkpoint; other arguments
    start over."""
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    args = [*TINY, '--dataset=tiny', f'--data_dir={tiny_data}', '--max_iters=8', '--lr_decay_iters=8',
            '--eval_interval=4', '--dropout=0.1']
    real_run = subprocess.run

    def stopped_at_6(command, **kwargs):
        real_run(command + ['--max_iters=4'], **kwargs)
        ckpt = os.path.join(tmp_path, 'stopped', 'ckpt.pt')
        shutil.copyfile(ckpt, ckpt + '.at4')
        real_run(command + ['--max_iters=6', '--init_from=resume'], **{**kwargs, 'stdout': subprocess.DEVNULL})
        os.replace(ckpt + '.at4', ckpt)
        return subprocess.CompletedProcess(command, -9)

    def losses(name):
        with open(tmp_path / name / 'metrics.jsonl') as f:
            records = [json.loads(line) for line in f]
        return [(r['kind'], r['iter'], r.get('loss', r.get('val_loss'))) for r in records]

    def run(name, extra=()):
        return study.run_one(args + list(extra), str(tmp_path / name), 1)

    def log(name, prev=''):
        return open(tmp_path / name / f'train.log{prev}').read()

    assert run('straight') == 0
    assert [i for k, i, _ in losses('straight') if k == 'eval'] == [0, 4, 8] and len(losses('straight')) == 11
    monkeypatch.setattr(subprocess, 'run', stopped_at_6)
    assert run('stopped') == -9
    monkeypatch.setattr(subprocess, 'run', real_run)
    assert [i for k, i, _ in losses('stopped') if k == 'train'] == [1, 2, 3, 4, 5, 6]
    for copy in ('damaged', 'locked', 'changed', 'other'):
        shutil.copytree(tmp_path / 'stopped', tmp_path / copy)  # mtimes kept: the checkpoint after started.json

    assert run('stopped') == 0
    assert losses('stopped') == losses('straight') and study.resumed_at(str(tmp_path / 'stopped'), False) == [4]
    assert study.resumed_at(str(tmp_path / 'straight'), False) == []

    with open(tmp_path / 'damaged' / 'ckpt.pt', 'r+b') as f:
        f.truncate(1000)
    assert run('damaged') == 0 and losses('damaged') == losses('straight')
    assert 'is corrupt or truncated' in log('damaged', '.prev') and 'could not be resumed from' in log('damaged')
    assert os.path.getsize(tmp_path / 'damaged' / 'ckpt.pt.bad') == 1000
    assert study.resumed_at(str(tmp_path / 'damaged'), False) == []

    with open(tmp_path / 'locked' / 'train.lock', 'w') as f:  # a live process (this one) holds the run
        json.dump(dict(host=socket.gethostname(), pid=os.getpid()), f)
    assert run('locked') == 2 and 'is in use by process' in log('locked')
    assert os.path.exists(tmp_path / 'locked' / 'ckpt.pt')
    os.remove(tmp_path / 'locked' / 'train.lock')
    assert run('locked') == 0 and losses('locked') == losses('straight')

    with monkeypatch.context() as edited:
        edited.setattr(study, 'code_hash', lambda: 'an edited optimizer')
        assert run('changed') == 0 and losses('changed') == losses('straight')
    assert 'the code it runs (study.RUN_CODE) changed' in log('changed')
    assert run('other', ['--seed=2']) == 0 and 'resuming' not in log('other')
    assert [i for k, i, _ in losses('other') if k == 'train'] == list(range(1, 9)) and \
           losses('other') != losses('straight')


def test_rerun_starts_a_finished_run_over(tiny_data, tmp_path):
    """--rerun=True runs a finished run again from its start, not from its last checkpoint."""
    first = run_study(tiny_data, tmp_path, '--max_iters=4', '--eval_interval=2', '--optimizers=adamw')[1]
    again = run_study(tiny_data, tmp_path, '--max_iters=4', '--eval_interval=2', '--optimizers=adamw',
                      '--rerun=True')[1]
    assert not again['trials'][0]['reused'] and again['trials'][0]['resumed_at'] == []
    assert again['rows'][0]['final_val_loss'] == first['rows'][0]['final_val_loss']
    assert 'resuming' not in open(tmp_path / 'adamw' / 'train.log').read()


def test_a_study_reads_another_studys_runs_from_its_folder(tmp_path, monkeypatch):
    """runs_from: a second study over a subset of the first's runs (and one new run) reads the finished ones from
    the first's results folder, without rerunning or copying them, and runs only the new one; its table has the
    same losses as the first's."""
    calls = []

    def recording_run(args, run_dir, nproc):
        calls.append(arg(args, 'wandb_run_name'))
        return fake_train(seeded_loss)(args, run_dir, nproc)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study, 'run_one', recording_run)
    common = "train_args = ['--max_iters=4']\ntune = ['lr=1e-3,1e-2']\nseeds = [1, 2]\nreference = 'adamw'\n"
    (tmp_path / 'first.py').write_text(f"runs = ['adamw', 'soap']\n{common}out_dir = 'out1'\nresults_dir = 'a'\n")
    study.main(['first.py'])
    first = len(calls)
    (tmp_path / 'second.py').write_text(f"runs = ['adamw', 'muon']\n{common}out_dir = 'out2'\nresults_dir = 'b'\n"
                                        "runs_from = ['a']\n")
    shutil.rmtree(tmp_path / 'out1')
    study.main(['second.py'])
    new = calls[first:]
    assert new and all(c.startswith('muon') for c in new)  # adamw's 4 trials were read from a/runs
    with open(tmp_path / 'a' / 'results.json') as f:
        a = {r['name']: r for r in json.load(f)['rows']}
    with open(tmp_path / 'b' / 'results.json') as f:
        b = json.load(f)
    adamw = [t for t in b['trials'] if t['name'] == 'adamw']
    assert len(adamw) == 4 and all(t['reused'] and t['out_dir'].startswith(os.path.join('a', 'runs')) for t in adamw)
    assert sorted(os.listdir(tmp_path / 'b' / 'runs')) == sorted(c.replace(' ', '_') for c in new)  # not copied
    assert b['rows'][0]['final_val_losses'] == a['adamw']['final_val_losses']

def ladder_loss(args):
    """adamw's final val loss falls with its budget (2.0, 1.8, 1.7 after 4, 8, 16 iterations); muon ends between
    adamw's 2x and 4x at seed 1 and between its 1x and 2x at seed 2, soap below its 4x, kfac above its 1x."""
    seed = int(arg(args, 'seed'))
    return {'adamw': {4: 2.0, 8: 1.8, 16: 1.7}[int(arg(args, 'max_iters'))], 'muon': {1: 1.75, 2: 1.85}[seed],
            'soap': 1.6, 'kfac': 2.1}[arg(args, 'optimizer')]


def test_ladder_speedup_by_hand(tmp_path, monkeypatch):
    """Speedup against adamw's ladder (1x, 2x, 4x its tokens, each a whole schedule; 16 tokens and 0.01 s an
    iteration, muon 0.02 s): the tokens adamw needs for a run's final loss (linear in log tokens between budgets)
    over the run's, its seconds there over the run's; '> 4x' below the ladder, '< 1x' above it."""
    calls = record_runs(monkeypatch, fake_train(ladder_loss, lambda a: 0.02 if arg(a, 'optimizer') == 'muon' else 0.01))
    monkeypatch.chdir(tmp_path)
    study.main(['--optimizers=adamw,muon,soap,kfac', '--out_dir=out', '--max_iters=4', '--seeds=1,2',
                '--reference=adamw', '--ladder=adamw', '--compare_to=muon'])
    with open(tmp_path / 'out' / 'results.json') as f:
        results = json.load(f)
    ladder = [a for a in calls if 'tokens=' in a[-1]]
    assert [(arg(a, 'seed'), arg(a, 'max_iters'), arg(a, 'lr_decay_iters')) for a in ladder] == [
        ('1', '8', '8'), ('1', '16', '16'), ('2', '8', '8'), ('2', '16', '16')]
    assert results['ladder']['seeds'][0] == dict(seed=1, tokens=[64, 128, 256], final_val_losses=[2.0, 1.8, 1.7],
                                                 seconds=pytest.approx([0.04, 0.08, 0.16]), monotone=True)
    rows = {r['name']: r for r in results['rows']}
    # muon: seed 1 ends at 1.75, halfway from 1.8 (128 tokens) to 1.7 (256): 128 * 2^0.5 tokens, 0.12 s of adamw's;
    # seed 2 at 1.85, 3/4 of the way from 2.0 (64) to 1.8 (128): 64 * 2^0.75 tokens, 0.07 s; muon took 0.08 s
    tokens, seconds = [2 ** 1.5, 2 ** 0.75], [0.12 / 0.08, 0.07 / 0.08]
    muon = rows['muon']
    assert muon['speedup_tokens_per_seed'] == pytest.approx(tokens)
    assert muon['speedup_seconds_per_seed'] == pytest.approx(seconds)
    assert muon['speedup_tokens'] == pytest.approx(np.mean(tokens)) and muon['speedup_beyond'] is None
    assert muon['speedup_tokens_ci95'] == pytest.approx(interval(tokens))
    assert muon['speedup_seconds_ci95'] == pytest.approx(interval(seconds))
    assert rows['adamw']['speedup_tokens'] == 1 and rows['adamw']['speedup_seconds'] == pytest.approx(1)
    soap, kfac = rows['soap'], rows['kfac']  # outside the ladder: its bounds, no interval
    assert (soap['speedup_tokens'], soap['speedup_seconds'], soap['speedup_beyond']) == (4, pytest.approx(4), '>')
    assert (kfac['speedup_tokens'], kfac['speedup_seconds'], kfac['speedup_beyond']) == (1, pytest.approx(1), '<')
    assert soap['speedup_tokens_ci95'] is None and kfac['speedup_seconds_ci95'] is None
    assert muon['diff_to_reference_mean'] == pytest.approx(-0.2)
    assert soap['diff_to_reference_mean'] == pytest.approx(-0.4)
    # --compare_to=muon: paired to muon's 1.75 (seed 1) and 1.85 (seed 2) as to the reference
    assert soap['diff_to_muon_mean'] == pytest.approx(-0.2)
    assert soap['diff_to_muon_ci95'] == pytest.approx(interval([-0.15, -0.25]))
    assert muon['diff_to_muon_mean'] == 0
    table = open(tmp_path / 'out' / 'results.md').read()
    lines = {line.split(' | ')[0]: line for line in table.splitlines() if line.startswith('| ')}
    assert lines['| soap'].startswith('| soap | — | ok | 1.6000 | 0.0000 | [1.6000, 1.6000] | 0.0150 | -0.4000* | '
                                      '[-0.4000, -0.4000] | -0.2000 | [-0.8353, +0.4353] | > 4.00× | — | > 4.00× | — |')
    assert lines['| kfac'].startswith('| kfac | — | ok | 2.1000 |')
    assert '| +0.1000* | [+0.1000, +0.1000] | +0.3000 | [' in lines['| kfac']
    assert '| < 1.00× | — | < 1.00× |' in lines['| kfac']
    assert '| -0.2000 | [' in table  # muon's interval holds 0: no star

    # --timing: the same runs (read back, none rerun) timed by a timing study's ms/iter (adamw 10 ms as measured,
    # muon 40 instead of 20): muon's 4 iterations take 0.16 s, adamw's ladder its iterations x 10 ms
    timing = tmp_path / 'timing.json'
    timed = [dict(name=n, status='ok', ms_per_iter=ms, ms_fwd_bwd=ms / 2) for n, ms in
             [('adamw', 10.0), ('muon', 40.0), ('soap', 10.0), ('kfac', 10.0)]]
    timing.write_text(json.dumps(dict(rows=timed)))
    calls.clear()
    study.main(['--optimizers=adamw,muon,soap,kfac', '--out_dir=out', '--max_iters=4', '--seeds=1,2',
                '--reference=adamw', '--ladder=adamw', f'--timing={timing}'])
    assert calls == []
    with open(tmp_path / 'out' / 'results.json') as f:
        muon = {r['name']: r for r in json.load(f)['rows']}['muon']
    assert muon['speedup_seconds_per_seed'] == pytest.approx([0.12 / 0.16, 0.07 / 0.16])
    assert muon['speedup_tokens_per_seed'] == pytest.approx(tokens)  # tokens do not change
    assert (muon['ms_per_iter'], muon['ms_fwd_bwd'], muon['measured_time_s']) == (40.0, 20.0, pytest.approx(0.08))
    assert 'not the time it took here' in open(tmp_path / 'out' / 'results.md').read()
    # a run's name as the target: steps to adamw's final loss, and their seconds from the timing study too
    study.main(['--optimizers=adamw,muon,soap,kfac', '--out_dir=out', '--max_iters=4', '--seeds=1,2',
                '--reference=adamw', '--ladder=adamw', f'--timing={timing}', '--target_loss=adamw'])
    with open(tmp_path / 'out' / 'results.json') as f:
        trials = [t for t in json.load(f)['trials'] if t['name'] == 'muon' and t['steps_to_target']]
    assert trials and all(t['seconds_to_target'] == pytest.approx(t['steps_to_target'] * 0.04) for t in trials)
    timing.write_text(json.dumps(dict(rows=timed[:2])))
    with pytest.raises(ValueError, match='no finished timing run named soap, kfac'):
        study.main(['--optimizers=adamw,muon,soap,kfac', '--out_dir=out', '--max_iters=4', f'--timing={timing}'])

    def rising(args):  # adamw's 2x run ends above its 1x: the ladder uses the running minimum, and says so
        return {4: 2.0, 8: 2.1, 16: 1.7}[int(arg(args, 'max_iters'))] if arg(args, 'optimizer') == 'adamw' else 1.9

    monkeypatch.setattr(study, 'run_one', fake_train(rising))
    study.main(['--optimizers=adamw,muon', '--out_dir=out-rising', '--max_iters=4', '--seeds=1',
                '--ladder=adamw'])
    with open(tmp_path / 'out-rising' / 'results.json') as f:
        results = json.load(f)
    assert results['ladder']['seeds'][0]['monotone'] is False
    # 1.9: a third of the way from 2.0 (the minimum up to 128 tokens) to 1.7 (256 tokens)
    assert results['rows'][1]['speedup_tokens'] == pytest.approx(2 * 2 ** (1 / 3))
    assert results['rows'][1]['speedup_tokens_ci95'] is None  # one seed
    assert "adamw's final val loss does not fall with its budget at seed(s) 1" in \
        open(tmp_path / 'out-rising' / 'results.md').read()


def test_plot_vs_draws_final_loss_against_an_override(tmp_path, monkeypatch):
    """--plot_vs=cross_terms (cross_terms.py's plot_vs): final_val_loss_vs_cross_terms.png, from the rows' means and
    intervals, one line per damping; rows without the override are left out."""
    def loss(args):
        return 1.5 + 0.1 * float(arg(args, 'cross_terms', 0)) + 0.01 * float(arg(args, 'seed'))

    monkeypatch.setattr(study, 'run_one', fake_train(loss))
    monkeypatch.chdir(tmp_path)
    runs = ';'.join(f'fixed_fisher:damping={lam},cross_terms={g}' for lam in ('1e-2', '1e-1') for g in ('0.0', '1.0'))
    study.main([f'--runs={runs};adamw', '--out_dir=out', '--max_iters=4', '--seeds=1,2', '--plot_vs=cross_terms'])
    rows = json.load(open(tmp_path / 'out' / 'results.json'))['rows']
    ff = [r for r in rows if r['optimizer'] == 'fixed_fisher']
    assert [r['final_val_loss_mean'] for r in ff] == pytest.approx([1.515, 1.615, 1.515, 1.615])
    with Image.open(tmp_path / 'out' / 'final_val_loss_vs_cross_terms.png') as image:
        assert image.format == 'PNG' and image.size[0] > 100
    import plot
    assert plot.plot_final_vs(rows, 'no_such_key', str(tmp_path)) is None


def test_mean_sd_ci_and_speedup_at_the_ladders_points():
    assert study.mean_sd_ci([1.0, 2.0, 3.0]) == (2.0, 1.0, pytest.approx([2 - 4.302653 / 3 ** 0.5,
                                                                          2 + 4.302653 / 3 ** 0.5]))
    assert study.mean_sd_ci([1.5]) == (1.5, None, None)
    assert study.mean_sd_ci([1.5, None]) == (None, None, None)
    ladder = [(256, 1.7, 1.6), (64, 2.0, 0.4), (128, 1.8, 0.8)]  # any order
    assert study.speedup(ladder, 1.7, 64, 0.4) == (pytest.approx(4), pytest.approx(4), None)  # exactly its 4x
    assert study.speedup(ladder, 2.0, 64, 0.8) == (pytest.approx(1), pytest.approx(0.5), None)
    assert study.speedup(ladder, 1.69, 32, 0.4) == (8, 4, '>') and study.speedup(ladder, 2.01, 32, 0.4) == (2, 1, '<')


def test_parse_runs_and_tune_grid():
    assert study.parse_runs('adamw, muon', 'kfac:damping=1e-2,factor_decay=0.9;soap:lr=1e-3') == [
        ('adamw', []), ('muon', []), ('kfac', [('damping', '1e-2'), ('factor_decay', '0.9')]),
        ('soap', [('learning_rate', '1e-3')])]
    assert study.parse_tune([]) == [[]]
    assert study.parse_tune(['lr=1e-4,3e-4', 'damping=1e-3']) == [
        [('learning_rate', '1e-4'), ('damping', '1e-3')], [('learning_rate', '3e-4'), ('damping', '1e-3')]]
    with pytest.raises(ValueError, match='not key=value'):
        study.parse_runs('', 'kfac:damping')
    with pytest.raises(ValueError, match='KEY=v1,v2'):
        study.parse_tune(['lr'])


def test_summary_of_a_run_that_never_started(tmp_path):
    row = study.summarize(str(tmp_path), 1, 1.9)
    assert row['status'] == 'failed' and 'metrics.jsonl not found' in row['error']


def train_records(losses):
    return [dict(kind='eval', iter=0, train_loss=3.0, val_loss=3.0, time_s=0.0)] + \
           [dict(kind='train', iter=i + 1, loss=loss, lr=1e-3, ms_per_iter=10.0, time_s=0.01 * (i + 1), peak_mem_mb=1.0)
            for i, loss in enumerate(losses)]


def test_summary_reads_train_pys_divergence(tmp_path):
    """train.py stops a diverged run (a blow-up, or many skipped steps: its losses may all be finite) with a
    {"kind": "diverged"} record, a 'training diverged:' line on stderr and a nonzero exit status: 'diverged', not
    'failed' or 'ok', whichever of them is there. Its log's stdout may end after the stderr line."""
    diverged = dict(kind='diverged', iter=3, reason='the loss blew up from 2.9 to 45.0')
    write_run(tmp_path / 'both', train_records([2.9, 2.8, 45.0]) + [diverged],
              "iter 3: loss 45.0\ntraining diverged: the loss blew up from 2.9 to 45.0 at iteration 3\n"
              "saving nothing\n")
    row = study.summarize(str(tmp_path / 'both'), 1, None)
    assert row['status'] == 'diverged' and row['error'].startswith('training diverged: the loss blew up')
    assert row['final_val_loss'] is None and row['best_val_loss'] == 3.0 and row['iters'] == 3
    for returncode in (1, 0):  # the record alone says it, even if the exit status does not
        write_run(tmp_path / f'record{returncode}', train_records([2.9, 2.8]) + [diverged], "done\n")
        row = study.summarize(str(tmp_path / f'record{returncode}'), returncode, None)
        assert row['status'] == 'diverged' and row['final_val_loss'] is None
        assert row['error'] == 'training diverged: the loss blew up from 2.9 to 45.0 (iteration 3)'


def test_torn_last_line_and_unknown_kinds_are_skipped(tmp_path):
    """A run killed mid-write leaves half a record as the last line; records of kinds study.py and plot.py do not draw
    ('diverged', or any a later train.py adds) are left out of theirs. A bad line before the last is still an error."""
    import plot
    records = train_records([2.9, 2.7]) + [dict(kind='eval', iter=2, train_loss=2.6, val_loss=2.5, time_s=0.02),
                                           dict(kind='lr_finder', iter=2, note='a kind from the future')]
    write_run(tmp_path / 'torn', records, "done\n", tail='{"iter": 3, "kind": "train", "loss": 2.')
    train, evals = plot.read_metrics(tmp_path / 'torn')
    assert [r['iter'] for r in train] == [1, 2] and [r['iter'] for r in evals] == [0, 2]
    row = study.summarize(str(tmp_path / 'torn'), 0, None)
    assert row['status'] == 'ok' and row['error'] is None and row['final_val_loss'] == 2.5 and row['iters'] == 2
    write_run(tmp_path / 'diverged', train_records([2.9, float('nan')]) + [dict(kind='diverged', iter=2, reason='nan')],
              "training diverged: the loss is nan\n", tail='\x00\x00\x00')
    assert len(plot.plot_runs([tmp_path / 'torn', tmp_path / 'diverged'], tmp_path / 'plots')) == 3
    assert_valid_pngs(tmp_path / 'plots')
    write_run(tmp_path / 'bad', records, "done\n")
    with open(tmp_path / 'bad' / 'metrics.jsonl', 'a') as f:
        f.write('{"iter": 3, "kind": "tra\n' + json.dumps(records[1]) + '\n')
    with pytest.raises(ValueError, match='line 6, is not a JSON record'):
        plot.read_metrics(tmp_path / 'bad')


def train_header():
    """train.py's config globals with their defaults: its source up to `config_keys = `, run."""
    path = os.path.join(REPO, 'train.py')
    source = open(path).read()
    namespace = {'__file__': path, '__name__': 'train_header'}
    exec(compile(source[:source.index('config_keys = ')], path, 'exec'), namespace)
    return namespace


STUDIES = sorted(glob.glob(os.path.join(REPO, 'config', 'studies', '*', '*.py')) +
                 glob.glob(os.path.join(REPO, 'config', 'studies', '*.py')))


@pytest.mark.parametrize('study_file', STUDIES, ids=os.path.basename)
def test_study_files_name_real_configs_and_globals(study_file, monkeypatch):
    """Every run of each study file (config/studies and its groups: ablations, scale) is a train.py command the
    configurator takes: its config file exists and sets known globals, its overrides, shared arguments and grid keys are globals; its
    reference, ladder and target name its runs. A config file not written yet is skipped (after the others pass)."""
    monkeypatch.chdir(REPO)
    settings = study.read_py(study_file)
    assert settings['runs'] and set(settings) <= study.STUDY_KEYS
    specs = study.parse_runs('', ';'.join(settings['runs']))
    names = [study.run_name(spec, overrides) for spec, overrides in specs]
    for key in ('reference', 'ladder', 'target_loss'):
        assert not isinstance(settings.get(key), str) or settings[key] in names, key
    assert all(other in names for other in settings.get('compare_to', [])), settings.get('compare_to')
    assert all(isinstance(s, int) for s in settings.get('seeds', []))
    assert all(isinstance(k, (int, float)) and k >= 1 for k in settings.get('ladder_budgets', []))
    if settings.get('tuned_from') and os.path.exists(settings['tuned_from']):  # its rows hold every run's best point
        with open(settings['tuned_from']) as f:
            assert set(names) <= {r['name'] for r in json.load(f)['rows'] if r.get('tuned') is not None}
    grid = study.parse_tune(settings.get('tune', []))
    shared = settings.get('train_args', [])
    missing = []
    for spec, overrides in specs:
        if spec.endswith('.py') and not os.path.exists(spec):
            missing.append(spec)
            continue
        for point in grid:
            args = [spec] if spec.endswith('.py') else [f'--optimizer={spec}']
            args += [*shared, *[f'--{k}={v}' for k, v in overrides + point]]
            namespace = train_header()
            monkeypatch.setattr(sys, 'argv', ['train.py', *args])
            exec(open(os.path.join(REPO, 'configurator.py')).read(), namespace)
            from optim import OPTIMIZERS
            assert namespace['optimizer'] in OPTIMIZERS
    if missing:
        pytest.skip(f"config files not written yet: {', '.join(missing)}")


@pytest.mark.parametrize('config', sorted(glob.glob(os.path.join(REPO, 'config', '*.py'))), ids=os.path.basename)
def test_config_sets_train_globals_of_their_types(config, monkeypatch):
    """Each config runs under train.py's configurator: only known keys, each of its default's type."""
    namespace = train_header()
    monkeypatch.setattr(sys, 'argv', ['train.py', config])
    exec(open(os.path.join(REPO, 'configurator.py')).read(), namespace)
    from optim import OPTIMIZERS
    assert namespace['optimizer'] in OPTIMIZERS
    if os.path.basename(config).startswith('speedrun_'):
        c = namespace
        assert c['batch_size'] * c['block_size'] * c['gradient_accumulation_steps'] == 524_288
        assert (c['dataset'], c['n_layer'], c['n_head'], c['n_embd']) == ('fineweb10B', 12, 12, 768)
        assert c['eval_iters'] * c['batch_size'] * c['block_size'] == 10_485_760


def test_a_study_files_results_dir_follows_its_group():
    assert study.study_results_dir('config/studies/compare_all_small.py') == os.path.join('results', 'compare_all_small')
    assert study.study_results_dir('config/studies/ablations/damping.py') == os.path.join('results', 'ablations',
                                                                                          'damping')
    assert study.study_results_dir('config/studies/scale/width64.py') == os.path.join('results', 'scale', 'width64')


def test_ladder_plot_reads_each_cells_rows(tmp_path):
    """plot.py --ladder: each cell's rows become one point per method at its tokens per step (tokens / iters) or its
    model's parameters (its first run's config.json, counted as the cost model counts them); the PNG is written, and
    the table has a row per method and cell with the row's own figures."""
    from plot import ladder_series, ladder_table, plot_ladder
    from benchmarks.cost_model import layers_of
    cells = []
    for batch, width, gap in ((48, 64, 0.01), (12, 128, 0.04)):
        cell = tmp_path / f'cell{batch}'
        (cell / 'run').mkdir(parents=True)
        model = dict(n_layer=4, n_head=4, n_embd=width, block_size=64, bias=False, dropout=0.0, attention='softmax')
        (cell / 'run' / 'config.json').write_text(json.dumps(dict(model, dataset='shakespeare_char', data_dir='')))
        rows = [dict(name=f'{m}_small', iters=100, tokens=100 * batch * 64, out_dirs=[str(cell / 'run')],
                     ms_per_iter=ms, ms_fwd_bwd=ms / 2, ms_decomp=ms / 8, ms_precond=ms / 4, speedup_tokens=s,
                     speedup_tokens_ci95=[s - 0.1, s + 0.1], speedup_seconds=s / 2, speedup_seconds_ci95=None,
                     speedup_beyond=None, diff_to_kfac_small_mean=gap if m == 'fixed_fisher' else 0.0,
                     diff_to_kfac_small_ci95=[gap - 0.02, gap + 0.02], tuned=dict(learning_rate='1e-3'), seeds=[1, 2],
                     final_val_loss_mean=1.5 + gap, final_val_loss_sd=0.01, final_val_losses=[1.5, 1.5])
                for m, ms, s in (('adamw', 50.0, 1.0), ('kfac', 80.0, 2.0), ('fixed_fisher', 120.0, 1.5))]
        if batch == 48:  # kfac: one seed beyond the ladder (a bound), one diverged (no mean)
            rows[1].update(speedup_beyond='>', speedup_seconds=None, final_val_losses=[1.5, None],
                           final_val_loss_mean=None, final_val_loss_sd=None)
        (cell / 'results.json').write_text(json.dumps(dict(rows=rows)))
        cells.append(str(cell))
    series = ladder_series(cells)
    assert [v for v, _ in series['fixed_fisher']] == [768, 3072]  # sorted by tokens per step
    assert [r['diff_to_kfac_small_mean'] for _, r in series['fixed_fisher']] == [0.04, 0.01]
    params = ladder_series(cells, 'params')
    assert [v for v, _ in params['kfac']] == [layers_of(dict(n_layer=4, n_head=4, n_embd=w, block_size=64, bias=False,
                                                            dropout=0.0, attention='softmax', vocab_size=65))[3]
                                             for w in (64, 128)]
    path = plot_ladder(cells, str(tmp_path / 'plots'), 'params')
    assert path.endswith('ladder_vs_params.png') and os.path.getsize(path) > 0
    table = ladder_table(cells).splitlines()
    assert len(table) == 2 + 3 * 2 and table[0].startswith('| method | tokens per step |')
    assert table[5] == '| kfac | 3,072 | lr 1e-3 | 1/2 | — ± — | — | > 2.00× [1.90, 2.10] | — | 80.0 |'
    assert table[-2:] == ['| fixed_fisher | 768 | lr 1e-3 | 2 | 1.540 ± 0.010 | +0.040* [+0.020, +0.060] | 1.50× [1.40, 1.60] '
                          '| 0.75× | 120.0 |',
                          '| fixed_fisher | 3,072 | lr 1e-3 | 2 | 1.510 ± 0.010 | +0.010 [-0.010, +0.030] '
                          '| 1.50× [1.40, 1.60] | 0.75× | 120.0 |']
    with pytest.raises(ValueError, match='tokens'):
        ladder_series(cells, 'layers')


def test_cross_term_ablations_give_the_best_gamma_per_tokens_per_step(tmp_path):
    """plot.py --cross_terms: per ablation folder, each gamma's lowest-mean row over lambda (set per row or tuned),
    the best gamma, and gamma 0 - gamma 1 paired seed by seed with a Student-t interval (scipy, by hand here); the
    table has a row per folder in order of tokens per step; the ladder plot draws them; a folder without cross_terms
    runs is an error naming it."""
    from scipy import stats
    from plot import cross_term_series, cross_term_table, plot_ladder
    def row(gamma, losses, iters, tokens, damping=None, tuned=None):
        mean = sum(losses) / len(losses)
        sd = (sum((v - mean) ** 2 for v in losses) / (len(losses) - 1)) ** 0.5
        overrides = dict(cross_terms=gamma) | (dict(damping=damping) if damping else {})
        return dict(name=f'fixed_fisher_small cross_terms={gamma}', iters=iters, tokens=tokens, overrides=overrides,
                    tuned=tuned or {}, seeds=[1, 2, 3], final_val_losses=losses, final_val_loss_mean=mean,
                    final_val_loss_sd=sd)
    small, large = tmp_path / 'small', tmp_path / 'large'
    for folder, rows in ((large, [row('0.0', [2.0, 2.2, 2.1], 500, 500 * 3072, tuned=dict(damping='1e1')),
                                  row('0.5', [1.9, 2.0, 2.0], 500, 500 * 3072, tuned=dict(damping='1')),
                                  row('1.0', [1.95, 2.0, 2.05], 500, 500 * 3072, tuned=dict(damping='1'))]),
                         (small, [row('0.0', [1.9, 1.9, 1.95], 1000, 768000, damping='1e-1'),
                                  row('0.0', [1.95, 1.9, 1.9], 1000, 768000, damping='3e-1'),  # same mean: first kept
                                  row('1.0', [1.8, 1.85, 1.83], 1000, 768000, damping='1e-1'),
                                  row('1.0', [1.7, 2.2, 1.9], 1000, 768000, damping='3e-1'),  # a higher mean
                                  dict(name='diverged', iters=1000, tokens=768000, overrides=dict(cross_terms='0.5'),
                                       final_val_loss_mean=None)])):
        folder.mkdir()
        (folder / 'results.json').write_text(json.dumps(dict(rows=rows)))
    series = cross_term_series([str(large), str(small)])
    assert [s[0] for s in series] == [768, 3072] and [s[2] for s in series] == [1.0, 0.5]
    assert series[0][1][1.0]['overrides']['damping'] == '1e-1' and sorted(series[0][1]) == [0.0, 1.0]
    diffs = [a - b for a, b in zip([2.0, 2.2, 2.1], [1.95, 2.0, 2.05])]
    mean, sd = sum(diffs) / 3, stats.tstd(diffs)
    half = stats.t.ppf(0.975, 2) * sd / 3 ** 0.5
    assert series[1][3][0] == pytest.approx(mean) and series[1][3][1] == pytest.approx([mean - half, mean + half])
    table = cross_term_table([str(small), str(large)]).splitlines()
    assert table[0] == ('| tokens per step | iters | seeds | γ 0: final val (λ) | γ 0.5: final val (λ) '
                        '| γ 1: final val (λ) | best γ | γ 0 − γ 1 [95% CI] |')
    assert table[2] == ('| 768 | 1,000 | 3 | 1.917 ± 0.029 (λ 1e-1) | — | 1.827 ± 0.025 (λ 1e-1) | 1 '
                        f'| +0.090* [{0.09 - stats.t.ppf(0.975, 2) * stats.tstd([0.1, 0.05, 0.12]) / 3 ** 0.5:+.3f}, '
                        f'{0.09 + stats.t.ppf(0.975, 2) * stats.tstd([0.1, 0.05, 0.12]) / 3 ** 0.5:+.3f}] |')
    assert table[3].startswith('| 3,072 | 500 | 3 | 2.100 ± 0.100 (λ 1e1) | 1.967 ± 0.058 (λ 1) |')
    cell = tmp_path / 'cell'
    cell.mkdir()
    (cell / 'results.json').write_text(json.dumps(dict(rows=[dict(name='adamw_small', iters=10, tokens=7680,
                                                                  ms_per_iter=5.0)])))
    path = plot_ladder([str(cell)], str(tmp_path / 'plots'), cross_terms=[str(small), str(large)])
    assert os.path.getsize(path) > 0
    with pytest.raises(ValueError, match='cell'):
        cross_term_series([str(cell)])


def test_plot_cross_terms_needs_the_tokens_per_step_axis(tmp_path):
    """plot.py --ladder --ladder_x=params --cross_terms=...: an error naming both (the ablations have no params axis)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(here, 'plot.py'), '--ladder', str(tmp_path),
                           '--ladder_x=params', f'--cross_terms={tmp_path}', f'--out={tmp_path}'],
                          capture_output=True, text=True)
    assert done.returncode == 2 and f'--cross_terms={tmp_path}' in done.stderr and '--ladder_x=params' in done.stderr
