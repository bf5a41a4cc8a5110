"""
PNG plots of train.py runs, read from their out_dir/metrics.jsonl: val loss vs steps and vs seconds of training
time (one line per run), and each run's median ms/iter beside its parts (bars). A run given as several folders
joined by commas (the same run at several seeds) is one line: the mean over them at each evaluation they all have
(vs seconds: at their mean time), with a band from their lowest to their highest val loss (min–max, not ±sd: three
seeds give no sd worth drawing).

$ python plot.py out-bench/*/ --out=out-plots
$ python plot.py out-adamw-small out-fixed-fisher-small --labels=adamw,fixed_fisher --target_loss=1.9
$ python plot.py out/adamw_seed=1,out/adamw_seed=2 out/muon_seed=1,out/muon_seed=2 --labels=adamw,muon

writes val_loss_vs_steps.png, val_loss_vs_seconds.png and ms_per_iter_breakdown.png into --out, and
damping_vs_steps.png (lambda and the reduction ratio) when a run adapts its damping (damping_schedule='lm').

$ python plot.py --ladder results/compare_all_small results/scale/batch48_tokens results/scale/batch192_tokens \
      --ladder_x=tokens_per_step --out=results/scale

reads study.py's results.json of each cell of a scale ladder (config/studies/scale/) and writes
ladder_vs_<x>.png: per method against x (tokens per step, or parameters), the speedup over AdamW in tokens and in
seconds (mean, 95% interval over the seeds), the Fixed Fisher - KFAC gap, and the step time over AdamW's with its
parts; and ladder_vs_<x>.md (also printed): the same figures as a table, a row per method and cell.
--cross_terms=results/ablations/cross_terms,results/scale/cross_terms_batch48 adds cross-term ablations at several
tokens per step: their gamma 0 - gamma 1 in the gap panel, labelled with the best gamma, and a table of each gamma's
best final val loss.
"""

import argparse
import json
import math
import os
import statistics

# train-record keys of the step-time breakdown, as train.py and the Kronecker optimizers log them (ms per iteration).
# forward+backward holds the factor-capture hooks, the optimizer step holds the decompositions and preconditioning:
# the parts overlap, so they are drawn side by side, not stacked.
BREAKDOWN = [
    ('ms_per_iter', 'total'),
    ('ms_fwd_bwd', 'forward+backward'),
    ('ms_factors', 'factor capture'),
    ('ms_decomp', 'decompositions'),
    ('ms_precond', 'preconditioning'),
    ('ms_step', 'optimizer step'),
]


def read_records(run_dir):
    """The records of run_dir/metrics.jsonl, in order; NaN and Infinity (as json writes them) are kept. A missing file
    is an error; a half-written last line (a run killed mid-write) is skipped."""
    path = os.path.join(run_dir, 'metrics.jsonl')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not a train.py out_dir, or the run has not started")
    with open(path, encoding='utf-8', errors='replace') as f:  # the bytes of a torn write may not decode
        lines = f.read().split('\n')  # not splitlines(): it also splits at characters a torn line may hold
    records = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if i == len(lines) - 1 or not line.strip():
                continue  # torn, or blank
            raise ValueError(f"{path}, line {i + 1}, is not a JSON record: {line[:80]!r}")
        records.append(record)
    return records


def read_metrics(run_dir):
    """(train records, eval records) of run_dir/metrics.jsonl (read_records), in order; other kinds ('diverged',
    and any a later train.py adds) are left out."""
    records = read_records(run_dir)
    return [r for r in records if r.get('kind') == 'train'], [r for r in records if r.get('kind') == 'eval']


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def median_ms(train, average=statistics.median):
    """{key: median (or another average) over the train records} for each BREAKDOWN key that some record has a
    finite value of."""
    out = {}
    for key, _ in BREAKDOWN:
        values = [r[key] for r in train if finite(r.get(key))]
        if values:
            out[key] = average(values)
    return out


def plot_runs(run_dirs, out, labels=None, target_loss=None):
    """Writes the PNGs for run_dirs into folder out and returns their paths. Each of run_dirs is a run's folder, or
    a list of folders: the same run at several seeds, one line (their mean) with a min–max band."""
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt

    groups = [[d] if isinstance(d, (str, os.PathLike)) else list(d) for d in run_dirs]
    labels = labels or [os.path.basename(os.path.normpath(g[0])) for g in groups]
    if len(labels) != len(groups):
        raise ValueError(f"{len(labels)} labels for {len(groups)} runs")
    runs = [(label, [read_metrics(d) for d in group]) for label, group in zip(labels, groups)]  # (train, evals)s
    os.makedirs(out, exist_ok=True)
    paths = []

    # the y axis starts at the highest second evaluation (the first after iteration 0), so that neither the first
    # drop from ~ln(vocab) nor a run blowing up flattens the curves that matter
    starts = [e[min(1, len(e) - 1)]['val_loss'] for _, seeds in runs for _, e in seeds
              if e and finite(e[min(1, len(e) - 1)]['val_loss'])]
    for x_key, x_label, name in [('iter', 'iteration', 'val_loss_vs_steps.png'),
                                 ('time_s', 'training time (s)', 'val_loss_vs_seconds.png')]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, seeds in runs:
            # the evaluations every seed has (a diverged seed's end cuts the line), x and val loss at each
            by_iter = [{e['iter']: e for e in evals if finite(e['val_loss'])} for _, evals in seeds]
            common = sorted(set.intersection(*(set(b) for b in by_iter)))
            xs = [statistics.mean(b[i][x_key] for b in by_iter) for i in common]
            losses = [[b[i]['val_loss'] for b in by_iter] for i in common]
            line, = ax.plot(xs, [statistics.mean(v) for v in losses], marker='o', markersize=3,
                            label=label if len(seeds) == 1 else f'{label} ({len(seeds)} seeds)')
            if len(seeds) > 1:
                ax.fill_between(xs, [min(v) for v in losses], [max(v) for v in losses], color=line.get_color(),
                                alpha=0.2, linewidth=0)
        if any(len(seeds) > 1 for _, seeds in runs):
            ax.set_title('mean over seeds; band: their min to max', fontsize=9)
        if target_loss is not None:
            ax.axhline(target_loss, color='gray', linestyle='--', linewidth=1, label=f'target {target_loss:g}')
        if starts:
            ax.set_ylim(top=max(starts) * 1.02)
        ax.set_xlabel(x_label)
        ax.set_ylabel('val loss')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(os.path.join(out, name))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    # grouped horizontal bars: per run, the median ms/iter and each part it logged
    medians = [median_ms([r for train, _ in seeds for r in train]) for _, seeds in runs]  # over all seeds' records
    parts = [(k, key, part) for k, (key, part) in enumerate(BREAKDOWN) if any(key in ms for ms in medians)]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.25 * len(runs) * max(len(parts), 1)))
    height = 0.8 / max(len(parts), 1)
    for j, (k, key, part) in enumerate(parts):
        ys = [i - 0.4 + (j + 0.5) * height for i, ms in enumerate(medians) if key in ms]
        ax.barh(ys, [ms[key] for ms in medians if key in ms], height=height, label=part, color=f'C{k}')
    ax.set_yticks(range(len(runs)), [label for label, _ in runs])
    ax.invert_yaxis()
    ax.set_xlabel('median ms per iteration')
    ax.set_title('ms/iter and its parts (they overlap: not stacked)', fontsize=9)
    ax.grid(axis='x', alpha=0.3)
    if parts:
        ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    paths.append(os.path.join(out, 'ms_per_iter_breakdown.png'))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # damping_schedule='lm': lambda (log scale) and the reduction ratio rho, with the rule's band 1/4 < rho < 3/4
    adaptive = [(label, [r for r in seeds[0][0] if 'lm_ratio' in r]) for label, seeds in runs]  # the first seed's
    adaptive = [(label, train) for label, train in adaptive if train]
    if adaptive:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        for label, train in adaptive:
            top.plot([r['iter'] for r in train], [r['damping'] for r in train], label=label)
            ratios = [(r['iter'], r['lm_ratio']) for r in train if finite(r['lm_ratio'])]
            bottom.plot([i for i, _ in ratios], [x for _, x in ratios], marker='.', linewidth=0.5, label=label)
        top.set_yscale('log')
        top.set_ylabel('damping λ')
        bottom.axhspan(0.25, 0.75, color='gray', alpha=0.15, label='λ kept')
        bottom.set_ylim(-1, 2)
        bottom.set_ylabel('reduction ratio ρ')
        bottom.set_xlabel('iteration')
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(os.path.join(out, 'damping_vs_steps.png'))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def plot_final_vs(rows, key, out):
    """final_val_loss_vs_<key>.png in folder out: study.py's rows (results.json) that set the override key, their
    final val loss (the mean over the seeds, bars the 95% interval) against its value, one line per setting of their
    other overrides (e.g. cross_terms = gamma at each damping). Returns the path, or None if no row sets key."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    lines = {}
    for r in rows:
        over = dict(r.get('overrides') or {})
        mean = r.get('final_val_loss_mean', r.get('final_val_loss'))
        if key not in over or mean is None or not finite(mean):
            continue
        rest = ', '.join(f'{k}={v}' for k, v in sorted(over.items()) if k != key) or r['name']
        lines.setdefault(rest, []).append((float(over[key]), mean, r.get('final_val_loss_ci95')))
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, points in sorted(lines.items()):
        points.sort()
        x, y = [p[0] for p in points], [p[1] for p in points]
        err = [[m - ci[0] if ci else 0 for _, m, ci in points], [ci[1] - m if ci else 0 for _, m, ci in points]]
        ax.errorbar(x, y, yerr=err, marker='o', capsize=3, label=label)
    ax.set_xlabel(key)
    ax.set_ylabel('final val loss (mean, 95% interval over seeds)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, f'final_val_loss_vs_{key}.png')
    os.makedirs(out, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


LADDER_PARTS = [('ms_fwd_bwd', 'forward+backward'), ('ms_decomp', 'decompositions'), ('ms_precond', 'preconditioning')]


def ladder_series(cells, x='tokens_per_step'):
    """{method: [(x, row)]} sorted by x, from the rows of each cell's results.json (cells: study results folders), a
    method named by its row ('kfac_small' -> 'kfac'). x: 'tokens_per_step' (the row's tokens / iters) or 'params'
    (the model of its first run's config.json, counted on the meta device)."""
    if x not in ('tokens_per_step', 'params'):
        raise ValueError(f"unknown ladder x {x!r}; known: tokens_per_step, params")
    series = {}
    for cell in cells:
        with open(os.path.join(cell, 'results.json')) as f:
            rows = json.load(f)['rows']
        for row in rows:
            if not row.get('iters'):
                continue
            if x == 'tokens_per_step':
                value = row['tokens'] / row['iters']
            else:
                from benchmarks.cost_model import layers_of  # torch: only for this axis
                with open(os.path.join(row['out_dirs'][0], 'config.json')) as f:
                    c = json.load(f)
                meta = os.path.join(c['data_dir'] or '', 'meta.json')  # the dataset's vocabulary, as train.py reads it
                vocab = json.load(open(meta))['vocab_size'] if os.path.exists(meta) else \
                    65 if c['dataset'] == 'shakespeare_char' else 50304
                value = layers_of({k: c[k] for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias', 'dropout',
                                                     'attention')} | dict(vocab_size=vocab))[3]
            series.setdefault(row['name'].removesuffix('_small'), []).append((value, row))
    return {m: sorted(points, key=lambda p: p[0]) for m, points in series.items()}


def cross_term_series(studies):
    """[(tokens per step, {gamma: row}, best gamma, (mean, [low, high]) of gamma 0 - gamma 1)] sorted by tokens per
    step, from cross-term ablations' results.json (studies: study results folders whose runs set cross_terms, as
    config/studies/ablations/cross_terms.py does). Per gamma the row with the lowest mean final val loss over the
    seeds (its lambda tuned or set per row: the best over lambda); the best gamma the lowest of those; gamma 0 - gamma 1
    the paired difference, seed by seed, of the two rows (None where either lacks a seed's loss)."""
    from study import mean_sd_ci  # study.py imports this file: here, not at the top
    series = []
    for folder in studies:
        with open(os.path.join(folder, 'results.json')) as f:
            rows = [r for r in json.load(f)['rows'] if r.get('iters') and 'cross_terms' in (r.get('overrides') or {})
                    and r.get('final_val_loss_mean') is not None]
        if not rows:
            raise ValueError(f"{folder}: no finished row with a cross_terms override (not a cross-term ablation?)")
        best = {}
        for row in rows:
            gamma = float(row['overrides']['cross_terms'])
            if gamma not in best or row['final_val_loss_mean'] < best[gamma]['final_val_loss_mean']:
                best[gamma] = row
        gap = None
        if 0.0 in best and 1.0 in best:
            first, last = best[0.0], best[1.0]
            if first['seeds'] == last['seeds']:
                mean, _, ci = mean_sd_ci([None if a is None or b is None else a - b
                                          for a, b in zip(first['final_val_losses'], last['final_val_losses'])])
                gap = None if mean is None else (mean, ci)
        series.append((rows[0]['tokens'] / rows[0]['iters'], dict(sorted(best.items())),
                       min(best, key=lambda g: best[g]['final_val_loss_mean']), gap))
    return sorted(series, key=lambda s: s[0])


def difference_text(mean, ci):
    """A paired difference as the tables show it: '+0.040* [+0.020, +0.060]', * where the interval leaves 0 out;
    '—' for none."""
    if mean is None:
        return '—'
    if not ci or ci[0] is None:
        return f'{mean:+.3f}'
    return f"{mean:+.3f}{'*' if ci[0] > 0 or ci[1] < 0 else ''} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def cross_term_table(studies):
    """The cross-term ablations as a markdown table (cross_term_series): a row per study in order of tokens per step,
    each gamma's best final val loss (mean ± sd, its lambda), the best gamma, and gamma 0 - gamma 1 [95% CI]."""
    series = cross_term_series(studies)
    gammas = sorted({g for _, rows, _, _ in series for g in rows})
    lines = ['| tokens per step | iters | seeds | ' + ' | '.join(f'γ {g:g}: final val (λ)' for g in gammas)
             + ' | best γ | γ 0 − γ 1 [95% CI] |', '| --- ' * (len(gammas) + 5) + '|']
    for tokens, rows, best, gap in series:
        cells = []
        for g in gammas:
            row = rows.get(g)
            lam = row and ((row.get('tuned') or {}).get('damping') or row['overrides'].get('damping'))
            cells.append('—' if row is None else f"{row['final_val_loss_mean']:.3f} ± "
                         f"{row['final_val_loss_sd'] or 0:.3f} ({'λ ' + lam if lam else 'default λ'})")
        any_row = next(iter(rows.values()))
        gap_text = difference_text(*gap) if gap else '—'
        lines.append(f"| {tokens:,.0f} | {any_row['iters']:,} | {len(any_row['seeds'])} | " + ' | '.join(cells)
                     + f' | {best:g} | {gap_text} |')
    return '\n'.join(lines) + '\n'


def plot_ladder(cells, out, x='tokens_per_step', cross_terms=()):
    """ladder_vs_<x>.png in folder out from the cells (ladder_series): speedup over AdamW in tokens and in seconds
    (mean, bars the 95% interval; a bound '>'/'<' drawn as a hollow marker), Fixed Fisher - KFAC (diff_to_kfac_small
    of the fixed_fisher row, its interval), each method's ms/iter over AdamW's at the same x, and Fixed Fisher's and
    KFAC's parts over AdamW's ms/iter; with cross_terms (cross-term ablations' folders, cross_term_series) and x tokens
    per step, also their gamma 0 - gamma 1 in the gap panel, each point labelled its best gamma. Returns the path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    series = ladder_series(cells, x)
    adamw_ms = {v: r['ms_per_iter'] for v, r in series.get('adamw', []) if r.get('ms_per_iter')}
    fig, axes = plt.subplots(1, 5, figsize=(24, 4.2))
    for method, points in sorted(series.items()):
        for ax, unit in zip(axes[:2], ('tokens', 'seconds')):
            pts = [(v, r[f'speedup_{unit}'], r.get(f'speedup_{unit}_ci95'), r.get('speedup_beyond'))
                   for v, r in points if r.get(f'speedup_{unit}') is not None]
            if pts:
                err = [[m - ci[0] if ci else 0 for _, m, ci, _ in pts], [ci[1] - m if ci else 0 for _, m, ci, _ in pts]]
                line = ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=err, marker='o', capsize=3,
                                   label=method)
                bounds = [p for p in pts if p[3]]
                ax.plot([p[0] for p in bounds], [p[1] for p in bounds], 'o', mfc='white',
                        color=line[0].get_color())
        ratio = [(v, r['ms_per_iter'] / adamw_ms[v]) for v, r in points if r.get('ms_per_iter') and v in adamw_ms]
        if ratio:
            axes[3].plot(*zip(*ratio), marker='o', label=method)
    gap = [(v, r.get('diff_to_kfac_small_mean'), r.get('diff_to_kfac_small_ci95'))
           for v, r in series.get('fixed_fisher', []) if r.get('diff_to_kfac_small_mean') is not None]
    if gap:
        err = [[m - ci[0] if ci else 0 for _, m, ci in gap], [ci[1] - m if ci else 0 for _, m, ci in gap]]
        axes[2].errorbar([g[0] for g in gap], [g[1] for g in gap], yerr=err, marker='o', capsize=3,
                         label='fixed_fisher − kfac')
    if cross_terms and x == 'tokens_per_step':  # the ablation's gamma 0 - gamma 1, each point labelled its best gamma
        ablation = [(v, gap, best) for v, _, best, gap in cross_term_series(cross_terms) if gap is not None]
        if ablation:
            err = [[m - ci[0] if ci else 0 for _, (m, ci), _ in ablation],
                   [ci[1] - m if ci else 0 for _, (m, ci), _ in ablation]]
            axes[2].errorbar([a[0] for a in ablation], [a[1][0] for a in ablation], yerr=err, marker='s', capsize=3,
                             color='C3', label='cross-term ablation: γ 0 − γ 1')
            for v, (m, _), best in ablation:
                axes[2].annotate(f'best γ {best:g}', (v, m), textcoords='offset points', xytext=(5, 5), fontsize=7)
    axes[2].axhline(0, color='gray', lw=0.8)
    for method, style in (('fixed_fisher', '-'), ('kfac', '--')):
        for (key, part), color in zip(LADDER_PARTS, ('C0', 'C1', 'C2')):
            pts = [(v, r[key] / adamw_ms[v]) for v, r in series.get(method, []) if r.get(key) and v in adamw_ms]
            if pts:
                axes[4].plot(*zip(*pts), style, marker='o', color=color, label=f'{method}: {part}')
    titles = ['speedup over AdamW in tokens', 'speedup over AdamW in seconds', 'Fixed Fisher − KFAC final val loss',
              'ms/iter over AdamW', 'parts of a step, over AdamW ms/iter']
    for ax, title in zip(axes, titles):
        ax.set_xscale('log')
        ax.set_xlabel('tokens per step' if x == 'tokens_per_step' else 'parameters')
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f'ladder_vs_{x}.png')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ladder_table(cells, x='tokens_per_step'):
    """The ladder as a markdown table (ladder_series): per method, a row per cell in order of x, with its tuned
    point, seeds (ended well / run), final val loss (mean ± sd over the seeds), the paired difference to KFAC (mean
    [95% interval], * when the interval leaves 0 out), the speedups over AdamW in tokens and seconds ('>'/'<' a
    bound) and ms/iter."""
    num = lambda v, fmt: '—' if v is None else fmt.format(v)
    interval = lambda ci, fmt: f' [{fmt.format(ci[0])}, {fmt.format(ci[1])}]' if ci and ci[0] is not None else ''

    def speedup(row, unit):
        value, bound = row.get(f'speedup_{unit}'), (row.get('speedup_beyond') or '').strip()
        if value is None:
            return '<> (seeds on both sides of the ladder)' if bound == '<>' else '—'
        return f"{bound + ' ' if bound else ''}{value:.2f}×" + interval(row.get(f'speedup_{unit}_ci95'), '{:.2f}')

    def seeds(row):
        """The seeds that ended well, of those run ('2', or '1/2' where one diverged or failed)."""
        losses = row.get('final_val_losses') or []
        ended = sum(loss is not None for loss in losses)
        return str(ended) if ended == len(losses) else f'{ended}/{len(losses)}'

    label = 'tokens per step' if x == 'tokens_per_step' else 'parameters'
    lines = [f'| method | {label} | tuned | seeds | final val loss ± sd | − KFAC [95% CI] | × AdamW tokens [95% CI] '
             f'| × AdamW seconds [95% CI] | ms/iter |', '| --- ' * 9 + '|']
    for method, points in ladder_series(cells, x).items():
        for value, row in points:
            tuned = ', '.join(f"{dict(learning_rate='lr', damping='λ').get(k, k)} {v}"
                              for k, v in (row.get('tuned') or {}).items()) or '—'
            gap_cell = '—' if method == 'kfac' else difference_text(row.get('diff_to_kfac_small_mean'),
                                                                        row.get('diff_to_kfac_small_ci95'))
            lines.append(f"| {method} | {value:,.0f} | {tuned} | {seeds(row)} "
                         f"| {num(row.get('final_val_loss_mean'), '{:.3f}')} "
                         f"± {num(row.get('final_val_loss_sd'), '{:.3f}')} "
                         f"| {gap_cell} | {speedup(row, 'tokens')} | {speedup(row, 'seconds')} "
                         f"| {num(row.get('ms_per_iter'), '{:.1f}')} |")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run_dirs', nargs='+', help="train.py out_dirs (each with a metrics.jsonl); dir1,dir2,... "
                                                    "for one run at several seeds; with --ladder, study results folders")
    parser.add_argument('--ladder', action='store_true', help="the folders are cells of a scale ladder")
    parser.add_argument('--ladder_x', default='tokens_per_step', help="tokens_per_step or params")
    parser.add_argument('--cross_terms', default='', help="with --ladder: cross-term ablations' results folders, "
                                                          "comma-separated (their best gamma against tokens per step)")
    parser.add_argument('--out', default='out-plots', help="folder for the PNGs")
    parser.add_argument('--labels', default=None, help="comma-separated legend labels (default: folder names)")
    parser.add_argument('--target_loss', type=float, default=None, help="draw this val loss as a dashed line")
    args = parser.parse_args()
    if args.ladder:
        cross_terms = [d for d in args.cross_terms.split(',') if d]
        if cross_terms and args.ladder_x != 'tokens_per_step':
            parser.error(f"--cross_terms={args.cross_terms}: the ablations are drawn against tokens per step, "
                         f"not --ladder_x={args.ladder_x}")
        print(f"wrote {plot_ladder(args.run_dirs, args.out, args.ladder_x, cross_terms)}")
        table = ladder_table(args.run_dirs, args.ladder_x)
        if cross_terms:
            table += '\nThe cross-term ablations (fixed_fisher with cross_terms = γ: 0 Fixed Fisher, 1 KFAC\'s damping):\n\n' \
                     + cross_term_table(cross_terms)
        with open(os.path.join(args.out, f'ladder_vs_{args.ladder_x}.md'), 'w') as f:
            f.write(table)
        print(table, end='')
        raise SystemExit(0)
    for path in plot_runs([d.split(',') for d in args.run_dirs], args.out,
                          args.labels.split(',') if args.labels else None,
                          args.target_loss):
        print(f"wrote {path}")
