"""
The GPU check, one command that fits in 10 minutes on one GPU and writes its figures to --out (markdown tables):
  kernels.md      the Triton kernels against torch (python -m benchmarks.kernels)
  step_time.md    ms/iter and its parts of adamw, kfac, fixed_fisher and muon at GPT-2 124M size (12 x 768, block
                  1024), torch.compile and bfloat16, on GPT-2 BPE tiny Shakespeare (throughput does not care which
                  text), the mean over the last 20 iterations (two cycles of the Kronecker updates)
  equal_steps.md  a short equal-steps comparison of the same four on a ~20M model (6 x 384, block 256): final val
                  loss after the same iterations (one seed: a look, not a finding)
  cost_model.md   this GPU's rates (python -m benchmarks.cost_model --calibrate --device=cuda: bf16 and TF32 matmul,
                  fp32 eigh, KFAC's damped inverse and QR at sizes 256-4096, saved to rates.json), the cost model's
                  prediction for the step-time runs beside their measurement, and its GPT-2 124M, 350M and 1.3B
                  predictions at 524,288 tokens per step on 8 ranks at these rates

$ python -m benchmarks.gpu --out=results/gpu                      # on the GPU machine
(data/shakespeare/prepare.py runs first if its train.bin is missing: it downloads, or reads NANOFISHER_DATA_MIRROR)
$ python -m benchmarks.gpu --tiny --out=/tmp/gpu-check             # the same steps on a CPU, tiny sizes (the test)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

from plot import median_ms, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIMIZERS = ['adamw', 'kfac', 'fixed_fisher', 'muon']
KRONECKER = ['--damping_mode=relative', '--damping=1e-1', '--grafting=adam', '--factor_update_freq=10',
             '--inv_update_freq=10']  # the small configs' Kronecker settings
CYCLE = 10  # their update frequencies: step times are means over whole cycles, each update at its 1/10 share
# (name, train.py arguments): GPT-2 124M for step time, ~20M for the equal-steps look; --tiny: one tiny size
FULL = dict(step_time=['--n_layer=12', '--n_head=12', '--n_embd=768', '--block_size=1024', '--batch_size=8',
                       '--max_iters=40', '--compile=True', '--dtype=bfloat16'],
            equal_steps=['--n_layer=6', '--n_head=6', '--n_embd=384', '--block_size=256', '--batch_size=32',
                         '--max_iters=300', '--compile=False', '--dtype=bfloat16'])
TINY_SIZE = ['--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2', '--max_iters=4',
             '--compile=False', '--dtype=float32', '--device=cpu']
TINY = dict(step_time=TINY_SIZE, equal_steps=TINY_SIZE)
GPT2_SIZES = [('124M', 12, 768, 12), ('350M', 24, 1024, 16), ('1.3B', 24, 2048, 16)]  # (name, layers, width, heads)


def train(optimizer, args, out_dir):
    lr = {'adamw': 6e-4, 'muon': 6e-4}.get(optimizer, 3e-4)
    command = [sys.executable, os.path.join(ROOT, 'train.py'), f'--optimizer={optimizer}', '--dataset=shakespeare',
               f'--out_dir={out_dir}', '--overwrite=True', '--gradient_accumulation_steps=1', f'--learning_rate={lr}',
               '--min_lr=0.0', '--log_interval=1', '--eval_iters=20', *args,
               *(KRONECKER if optimizer in ('kfac', 'fixed_fisher') else [])]
    max_iters = next(a.split('=')[1] for a in args if a.startswith('--max_iters='))
    command += [f'--lr_decay_iters={max_iters}', f'--eval_interval={max_iters}',
                f'--warmup_iters={min(10, int(max_iters) // 2)}']
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{optimizer}: train.py failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return read_metrics(out_dir)


def step_ms(trains):
    """{key: mean ms} of each BREAKDOWN key over the last 2 cycles of per-iteration records (past compilation; each
    record is one step, and only one step in a cycle decomposes)."""
    return median_ms(trains[-2 * CYCLE:], average=statistics.fmean)


def cost_model(out, train_args, step_time_ms, tiny, head):
    """cost_model.md: calibrate this device's rates once (rates.json), then the cost model's prediction for the
    step-time runs' config beside their measured means, and for GPT-2 sizes at 524,288 tokens on 8 ranks."""
    rows = [dict(optimizer=name, status='ok', **ms) for name, ms in step_time_ms.items()]
    measured, rates = (os.path.abspath(os.path.join(out, name)) for name in ('step_time.json', 'rates.json'))
    with open(measured, 'w') as f:
        json.dump(dict(rows=rows), f, indent=1)
    value = dict(a[2:].split('=', 1) for a in train_args)
    model = [f'--set={k}={value[k]}' for k in ('n_layer', 'n_head', 'n_embd', 'block_size')]
    common = ['--set=vocab_size=50304', '--set=grafting=adam', f'--set=factor_update_freq={CYCLE}',
              f'--set=inv_update_freq={CYCLE}', f"--methods={','.join(OPTIMIZERS)}"]
    calibration = ['--calibrate', '--device=cpu', '--sizes=16,32'] if tiny else \
        ['--calibrate', '--device=cuda', '--sizes=256,512,1024,2048,4096']
    tokens = int(value['batch_size']) * int(value['block_size'])
    calls = [(f"the step-time runs' config ({tokens:,} tokens per step, 1 rank): predicted / measured",
              [*model, *common, f'--tokens_per_step={tokens}', *calibration, f'--save_rates={rates}',
               f'--measured={measured}'])]
    for name, layers, width, heads in GPT2_SIZES[:1] if tiny else GPT2_SIZES:
        calls.append((f"GPT-2 {name} at 524,288 tokens per step on 8 ranks, these rates",
                      [f'--set=n_layer={layers}', f'--set=n_embd={width}', f'--set=n_head={heads}',
                       '--set=block_size=1024', *common, '--tokens_per_step=524288', '--ranks=8', f'--rates={rates}']))
    text = [head]
    for title, call in calls:
        result = subprocess.run([sys.executable, '-m', 'benchmarks.cost_model', *call], capture_output=True,
                                text=True, cwd=ROOT)
        text.append(f"## {title}\n\n" + (result.stdout if result.returncode == 0 else
                                          f"failed:\n{result.stderr[-3000:]}\n"))
    with open(os.path.join(out, 'cost_model.md'), 'w') as f:
        f.write('\n'.join(text))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='results/gpu', help="folder for the markdown tables")
    p.add_argument('--tiny', action='store_true', help="tiny sizes on the CPU: checks the script, no figures")
    p.add_argument('--skip_kernels', action='store_true')
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    sizes = TINY if args.tiny else FULL
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else 'CPU (tiny check)'
    head = f"{where}, torch {torch.__version__}\n\n"
    if not args.skip_kernels:
        command = [sys.executable, '-m', 'benchmarks.kernels'] + (['--sizes', '33'] if args.tiny else [])
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                env={**os.environ, **({'TRITON_INTERPRET': '1'} if args.tiny else {})})
        with open(os.path.join(args.out, 'kernels.md'), 'w') as f:
            f.write(result.stdout if result.returncode == 0 else f"failed:\n{result.stderr[-3000:]}\n")
    if not os.path.exists(os.path.join(ROOT, 'data', 'shakespeare', 'train.bin')):  # GPT-2 BPE tiny Shakespeare
        subprocess.run([sys.executable, os.path.join(ROOT, 'data', 'shakespeare', 'prepare.py')], check=True)
    runs = os.path.join(args.out, 'runs')
    lines = [head + "| optimizer | ms/iter | fwd+bwd | factors | decomp | precond | step | × adamw |",
             "|---|---|---|---|---|---|---|---|"]
    base, step_time_runs, step_time_ms = None, {}, {}
    for name in OPTIMIZERS:
        trains, _ = step_time_runs[name] = train(name, sizes['step_time'], os.path.join(runs, f'step_time_{name}'))
        ms = step_time_ms[name] = step_ms(trains)
        base = ms['ms_per_iter'] if name == 'adamw' else base
        cells = [f"{ms[k]:.1f}" if k in ms else '—' for k in ('ms_per_iter', 'ms_fwd_bwd', 'ms_factors', 'ms_decomp',
                                                              'ms_precond', 'ms_step')]
        lines.append(f"| {name} | {' | '.join(cells)} | {ms['ms_per_iter'] / base:.2f} |")
    with open(os.path.join(args.out, 'step_time.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    cost_model(args.out, sizes['step_time'], step_time_ms, tiny=args.tiny, head=head)
    lines = [head + "| optimizer | final val loss | iterations |", "|---|---|---|"]
    for name in OPTIMIZERS:  # (--tiny's two sizes are one: its step-time runs serve)
        _, evals = step_time_runs[name] if sizes['equal_steps'] == sizes['step_time'] else \
            train(name, sizes['equal_steps'], os.path.join(runs, f'equal_steps_{name}'))
        lines.append(f"| {name} | {evals[-1]['val_loss']:.4f} | {evals[-1]['iter']} |")
    with open(os.path.join(args.out, 'equal_steps.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print(f"wrote {', '.join(sorted(os.listdir(args.out)))} to {args.out}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
