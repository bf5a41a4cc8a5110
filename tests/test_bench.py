"""bench.py and plot.py end to end on CPU (tiny synthetic data, a few iterations), and the study's configs."""
import glob
import json
import math
import os
import subprocess
import sys

import pytest
from PIL import Image

import bench
from test_train import REPO, TINY, tiny_data  # noqa: F401 (tiny_data is a fixture)

PLOTS = ['val_loss_vs_steps.png', 'val_loss_vs_seconds.png', 'ms_per_iter_breakdown.png']
FIELDS = {'name', 'optimizer', 'tuned', 'status', 'final_val_loss', 'best_val_loss', 'steps_to_target',
          'seconds_to_target', 'iters', 'tokens', 'time_s', 'ms_per_iter', 'ms_fwd_bwd', 'ms_factors', 'ms_decomp',
          'ms_precond', 'ms_step', 'peak_mem_mb', 'out_dir', 'error'}


def run_bench(tiny_data, out_dir, *args):
    command = [sys.executable, os.path.join(REPO, 'bench.py'), *TINY, '--dataset=tiny', f'--data_dir={tiny_data}',
               f'--out_dir={out_dir}', *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, f"bench.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    with open(os.path.join(out_dir, 'results.json')) as f:
        return result, json.load(f)


def assert_valid_pngs(folder):
    for name in PLOTS:
        with Image.open(os.path.join(folder, name)) as image:
            assert image.format == 'PNG' and image.size[0] > 100 and image.size[1] > 100
            image.verify()


def test_bench_compares_optimizers_and_reports_divergence(tiny_data, tmp_path):
    """adamw and muon on the same data and budget, plus a run whose loss turns NaN: that one is 'diverged' in the
    table, and the others still run and report."""
    result, results = run_bench(tiny_data, tmp_path, '--max_iters=6', '--eval_interval=3', '--target_loss=2.6',
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


def write_run(run_dir, records, log, tail=''):
    """A train.py out_dir as bench reads it: config.json, metrics.jsonl (records, then tail, e.g. a torn line) and
    train.log."""
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, 'config.json'), 'w') as f:
        json.dump(dict(gradient_accumulation_steps=1, batch_size=2, block_size=8), f)
    with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in records) + tail)
    with open(os.path.join(run_dir, 'train.log'), 'w') as f:
        f.write(log)


def fake_run(args, run_dir, nproc):
    """Stands in for train.py in bench.run_one: metrics whose final val loss is |log10(lr) + 2| + 1, so lr=1e-2 is
    the best; lr=1e30 diverges as train.py did (a NaN train record, an error, exit code 1)."""
    lr = float(next(a.split('=')[1] for a in reversed(args) if a.startswith('--learning_rate=')))
    final = abs(math.log10(lr) + 2) + 1
    records = [dict(kind='eval', iter=0, train_loss=3.0, val_loss=3.0, time_s=0.0)]
    records += [dict(kind='train', iter=i, loss=float('nan') if lr > 1 else 3 - i * (3 - final) / 4, lr=lr,
                     ms_per_iter=10.0 + i, tokens_per_s=1600.0, time_s=0.01 * i, ms_fwd_bwd=6.0, ms_step=3.0,
                     ms_factors=1.0, ms_decomp=0.5, ms_precond=1.5, peak_mem_mb=100.0 + i) for i in (1, 2, 3, 4)]
    if lr <= 1:
        records.append(dict(kind='eval', iter=4, train_loss=final, val_loss=final, time_s=0.04))
    write_run(run_dir, records,
              "FloatingPointError: training diverged: the loss is nan at iteration 1\n" if lr > 1 else "done\n")
    return 1 if lr > 1 else 0


def test_tune_keeps_each_optimizers_best_and_plot_cli(tmp_path, monkeypatch):
    """--tune lr=... runs the grid per optimizer and keeps the lowest final val loss; a diverged grid point is never
    the best; a knob the optimizer does not take is not tuned. plot.py plots every trial, the diverged one too."""
    monkeypatch.setattr(bench, 'run_one', fake_run)
    monkeypatch.chdir(tmp_path)
    bench.main(['config/adamw_small.py', '--optimizers=adamw,kfac', '--out_dir=out', '--target_loss=1.5',
                '--tune', 'lr=1e30,1e-3,1e-2', '--tune=damping=1e-3,1e-2'])  # adamw takes no damping
    with open(tmp_path / 'out' / 'results.json') as f:
        results = json.load(f)
    trials = [(t['trial'], t['status']) for t in results['trials']]
    assert trials[:3] == [('adamw learning_rate=1e30', 'diverged'), ('adamw learning_rate=1e-3', 'ok'),
                          ('adamw learning_rate=1e-2', 'ok')]
    assert len(trials) == 3 + 6 and trials[3] == ('kfac learning_rate=1e30 damping=1e-3', 'diverged')
    adamw, kfac = results['rows']
    assert adamw['tuned'] == {'learning_rate': '1e-2'} and adamw['final_val_loss'] == 1.0
    assert kfac['tuned'] == {'learning_rate': '1e-2', 'damping': '1e-3'}
    assert adamw['steps_to_target'] == 4 and adamw['tokens'] == 4 * 16 and adamw['peak_mem_mb'] == 104.0
    assert adamw['ms_per_iter'] == 12.5 and adamw['ms_factors'] == 1.0  # medians over the train records
    assert 'training diverged' in results['trials'][0]['error']
    table = open(tmp_path / 'out' / 'results.md').read()
    assert '| adamw | learning_rate=1e-2 | ok | 1.0000 | 1.0000 | 4 | 0.0 | 4 | 0.0 | 12.5 | 6.0 | 1.0 |' in table
    assert '| adamw learning_rate=1e30 | diverged | — |' in table  # the grid's trials, below the table
    assert_valid_pngs(tmp_path / 'out')

    out = tmp_path / 'plots'
    result = subprocess.run([sys.executable, os.path.join(REPO, 'plot.py'), *[t['out_dir'] for t in results['trials']],
                             f'--out={out}', '--target_loss=2.0'], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_valid_pngs(out)


def test_study_file_with_config_runs_and_parallel_jobs(tmp_path, monkeypatch):
    """A study file sets runs (an optimizer with overrides, a config file), the shared train.py arguments, a tuning
    grid and jobs; the command line adds to it. A config file's run is train.py FILE <shared> <overrides>, named
    after the file and tuned as its optimizer; runs at the same time still land in the table in the order given."""
    calls = []

    def recording_run(args, run_dir, nproc):
        calls.append(args)
        return fake_run(args, run_dir, nproc)

    monkeypatch.setattr(bench, 'run_one', recording_run)
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'my_adamw.py').write_text("optimizer = 'adamw'\nlearning_rate = 3e-3\n")
    (tmp_path / 'study.py').write_text(
        "runs = ['my_adamw.py', 'kfac:damping=1e-2']\ntrain_args = ['--max_iters=4', '--eval_interval=2']\n"
        "tune = ['lr=1e-3,1e-2']\njobs = 2\nout_dir = 'out-study'\ntarget_loss = 'my_adamw'\n")
    bench.main(['study.py', '--runs=eva', '--eval_interval=4', '--tune=damping=1e-1,1'])
    with open(tmp_path / 'out-study' / 'results.json') as f:
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
    bench.main(['study.py', '--runs=eva', '--eval_interval=4', '--tune=damping=1e-1,1', '--runs=soap'])
    assert len(calls) == 12 and all('--optimizer=soap' in a for a in calls[10:])
    with open(tmp_path / 'out-study' / 'results.json') as f:
        again = json.load(f)
    assert [r['name'] for r in again['rows']] == ['my_adamw', 'kfac damping=1e-2', 'eva', 'soap']
    assert [t['reused'] for t in again['trials']] == [True] * 10 + [False] * 2
    assert [t['final_val_loss'] for t in again['trials'][:10]] == [t['final_val_loss'] for t in results['trials']]


def test_parse_runs_and_tune_grid():
    assert bench.parse_runs('adamw, muon', 'kfac:damping=1e-2,factor_decay=0.9;soap:lr=1e-3') == [
        ('adamw', []), ('muon', []), ('kfac', [('damping', '1e-2'), ('factor_decay', '0.9')]),
        ('soap', [('learning_rate', '1e-3')])]
    assert bench.parse_tune([]) == [[]]
    assert bench.parse_tune(['lr=1e-4,3e-4', 'damping=1e-3']) == [
        [('learning_rate', '1e-4'), ('damping', '1e-3')], [('learning_rate', '3e-4'), ('damping', '1e-3')]]
    with pytest.raises(ValueError, match='not key=value'):
        bench.parse_runs('', 'kfac:damping')
    with pytest.raises(ValueError, match='KEY=v1,v2'):
        bench.parse_tune(['lr'])


def test_summary_of_a_run_that_never_started(tmp_path):
    row = bench.summarize(str(tmp_path), 1, 1.9)
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
    row = bench.summarize(str(tmp_path / 'both'), 1, None)
    assert row['status'] == 'diverged' and row['error'].startswith('training diverged: the loss blew up')
    assert row['final_val_loss'] is None and row['best_val_loss'] == 3.0 and row['iters'] == 3
    for returncode in (1, 0):  # the record alone says it, even if the exit status does not
        write_run(tmp_path / f'record{returncode}', train_records([2.9, 2.8]) + [diverged], "done\n")
        row = bench.summarize(str(tmp_path / f'record{returncode}'), returncode, None)
        assert row['status'] == 'diverged' and row['final_val_loss'] is None
        assert row['error'] == 'training diverged: the loss blew up from 2.9 to 45.0 (iteration 3)'


def test_torn_last_line_and_unknown_kinds_are_skipped(tmp_path):
    """A run killed mid-write leaves half a record as the last line; records of kinds bench and plot do not draw
    ('diverged', or any a later train.py adds) are left out of theirs. A bad line before the last is still an error."""
    import plot
    records = train_records([2.9, 2.7]) + [dict(kind='eval', iter=2, train_loss=2.6, val_loss=2.5, time_s=0.02),
                                           dict(kind='lr_finder', iter=2, note='a kind from the future')]
    write_run(tmp_path / 'torn', records, "done\n", tail='{"iter": 3, "kind": "train", "loss": 2.')
    train, evals = plot.read_metrics(tmp_path / 'torn')
    assert [r['iter'] for r in train] == [1, 2] and [r['iter'] for r in evals] == [0, 2]
    row = bench.summarize(str(tmp_path / 'torn'), 0, None)
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


STUDIES = sorted(glob.glob(os.path.join(REPO, 'config', 'ablations', '*.py')) +
                 glob.glob(os.path.join(REPO, 'config', 'bench', '*.py')))


@pytest.mark.parametrize('study', STUDIES, ids=os.path.basename)
def test_study_files_name_real_configs_and_globals(study, monkeypatch):
    """Every run of each study file (config/ablations, config/bench) is a train.py command the configurator takes:
    its config file exists and sets known globals, its overrides, shared arguments and grid keys are globals."""
    monkeypatch.chdir(REPO)
    settings = bench.read_py(study)
    assert settings['runs'] and set(settings) <= {'runs', 'train_args', 'tune', 'target_loss', 'out_dir', 'jobs',
                                                  'nproc'}
    specs = bench.parse_runs('', ';'.join(settings['runs']))
    grid = bench.parse_tune(settings.get('tune', []))
    shared = settings.get('train_args', [])
    for spec, overrides in specs:
        for point in grid:
            args = [spec] if spec.endswith('.py') else [f'--optimizer={spec}']
            args += [*shared, *[f'--{k}={v}' for k, v in overrides + point]]
            namespace = train_header()
            monkeypatch.setattr(sys, 'argv', ['train.py', *args])
            exec(open(os.path.join(REPO, 'configurator.py')).read(), namespace)
            from optim import OPTIMIZERS
            assert namespace['optimizer'] in OPTIMIZERS


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
