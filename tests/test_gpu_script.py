"""benchmarks/gpu.py, the prepared GPU check, end to end on the CPU with its tiny settings: every table written,
one row per optimizer, the kernels' table from benchmarks.kernels, the cost model calibrated and set beside the
step-time runs."""
import json
import os

from benchmarks import gpu


def test_gpu_check_runs_on_the_cpu_with_tiny_settings(tmp_path):
    assert gpu.main(['--tiny', f'--out={tmp_path}']) == 0
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.md')) == ['cost_model.md', 'equal_steps.md',
                                                                            'kernels.md', 'step_time.md']
    step_time = open(tmp_path / 'step_time.md').read()
    assert all(f'| {name} | ' in step_time for name in gpu.OPTIMIZERS) and '| adamw | ' in step_time
    assert '1.00 |' in step_time.splitlines()[4]  # adamw's row: 1x itself
    equal = open(tmp_path / 'equal_steps.md').read()
    assert all(f'| {name} | ' in equal and f'| {name} | nan' not in equal for name in gpu.OPTIMIZERS)
    assert 'eigenbasis_precondition' in open(tmp_path / 'kernels.md').read()
    cost = open(tmp_path / 'cost_model.md').read()
    assert 'failed' not in cost and 'GPT-2 124M at 524,288 tokens' in cost
    gpt2 = cost.split('GPT-2 124M at 524,288 tokens')[1]
    assert '@16' in gpt2 and '| fixed_fisher | ' in gpt2  # the calibrated tables, read back from rates.json
    against = cost.split('| method | fwd+bwd predicted / measured ms')[1].split('## ')[0]
    assert all(f'| {name} | ' in against for name in gpu.OPTIMIZERS)  # every step-time run, predicted / measured
    rates = json.load(open(tmp_path / 'rates.json'))
    assert sorted(rates['eigh_flops_per_s']) == ['16', '32'] and rates['matmul_flops_per_s'] > 0
