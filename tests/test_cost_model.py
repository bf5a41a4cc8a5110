"""benchmarks/cost_model.py against independent counts on the small model (4 layers, n_embd 128, 768 tokens per
step): torch's FlopCounterMode for forward+backward, factor capture and preconditioning, a hand count of its layers
for the decompositions, and the bytes a real optimizer's layer_state holds."""
import json
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.cost_model import (EIGH, INVERSE, METHODS, QR, RATE_KEYS, RATES, calibrate, load_rates, main,
                                   psgd_fit_fraction, rate_at, step_cost, step_seconds)
import optim.eigenbasis
import optim.kfac
from model import GPT, GPTConfig
from optim import build_optimizer
from optim.kronecker import gradient_matrix

SMALL = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, vocab_size=65, dropout=0.0)
N = 12 * 64  # tokens per step
# the small model's preconditioned layers, (d_in, d_out), by hand: per block c_attn, attn.c_proj, c_fc, mlp.c_proj
# (the lm_head is tied to the embedding and stays with AdamW)
LAYERS = [(128, 384), (128, 128), (128, 512), (512, 128)] * 4


def small_model_and_batch(seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**SMALL))
    X, Y = torch.randint(0, 65, (12, 64)), torch.randint(0, 65, (12, 64))
    return model, X, Y


def counted(fn):
    """Matmul FLOPs torch counts while fn runs (the math attention, so that its batched products are counted)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return counter.get_total_flops()


def test_forward_backward_flops_equal_torch_flop_counter():
    model, X, Y = small_model_and_batch()
    assert counted(lambda: model(X, Y)[1].backward()) == step_cost('adamw', SMALL, N)['fwd_bwd']


def test_one_step_of_each_part_equals_a_hand_count():
    cost = step_cost('fixed_fisher', SMALL, N, factor_update_freq=1, inv_update_freq=1)
    forward = 2 * N * sum(i * o for i, o in LAYERS) + 2 * N * 128 * 65 + 4 * N * 64 * 128 * 4  # + lm_head, attention
    assert cost['fwd_bwd'] == 3 * forward
    assert cost['capture'] == sum(2 * N * (i * i + o * o) for i, o in LAYERS)
    assert cost['decomp'] == sum(EIGH * (i ** 3 + o ** 3) for i, o in LAYERS)  # two eighs a layer
    assert cost['precond'] == sum(4 * o * i * (i + o) for i, o in LAYERS)  # Q_G^T V, . Q_A, and back
    amortised = step_cost('fixed_fisher', SMALL, 8 * N, ranks=8, factor_update_freq=10, inv_update_freq=10)
    assert amortised['capture'] == cost['capture'] / 10
    assert amortised['decomp'] == pytest.approx(cost['decomp'] / 80, rel=1e-12)  # float64 rounding
    assert step_cost('kfac', SMALL, N)['precond'] == cost['precond'] / 2


@pytest.mark.parametrize('method,approx', [('kfac', 'expand'), ('fixed_fisher', 'expand'), ('kfac', 'reduce')])
def test_capture_and_preconditioning_flops_equal_torch_flop_counter(method, approx):
    """A factor-update step's forward+backward counts the hooks' x^T x on top of the model's (reduce: one row per
    sequence, a 64th of expand's); precondition() on every layer counts the method's products (kernels' torch path
    on a CPU)."""
    model, X, Y = small_model_and_batch()
    opt = build_optimizer(method, model, factor_update_freq=1, inv_update_freq=1, kl_clip=None, kfac_approx=approx)
    cost = step_cost(method, SMALL, N, factor_update_freq=1, inv_update_freq=1, kfac_approx=approx)
    if approx == 'reduce':
        assert cost['capture'] == step_cost(method, SMALL, N, factor_update_freq=1)['capture'] / 64
    assert counted(lambda: model(X, Y)[1].backward()) == cost['fwd_bwd'] + cost['capture']
    opt.step()
    model(X, Y)[1].backward()  # gradients for the preconditioning below (the hooks record again: not counted)
    layers = [(opt.layer_state[g['name']], gradient_matrix(g)) for g in opt.param_groups if g['kind'] == 'kronecker']
    assert counted(lambda: [opt.precondition(st, V) for st, V in layers]) == cost['precond']


@pytest.mark.parametrize('method,grafting', [('kfac', 'none'), ('fixed_fisher', 'adam'), ('ekfac', 'adam')])
def test_state_bytes_equal_a_real_optimizers_state(method, grafting):
    model, X, Y = small_model_and_batch()
    opt = build_optimizer(method, model, factor_update_freq=1, inv_update_freq=1, grafting=grafting, lr=1e-3)
    for _ in range(2):
        model(X, Y)[1].backward()
        opt.step()
        opt.zero_grad()
    held = sum(t.nbytes for st in opt.layer_state.values() for t in st.values()
               if torch.is_tensor(t) and t.dim() > 0)  # not the 0-d damping_eff
    assert held == step_cost(method, SMALL, N, grafting=grafting)['state_bytes']


def optimizer_state_bytes(opt):
    """The bytes of the tensors an optimizer (and the optimizers it holds, but AdamW) keeps per parameter: each
    storage once, not 1-element step counts and bounds."""
    parts = [opt] + [o for o in vars(opt).values() if isinstance(o, torch.optim.Optimizer)
                     and not isinstance(o, torch.optim.AdamW)]
    seen = {}

    def walk(x):
        if torch.is_tensor(x):
            if x.numel() > 1:
                seen[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        elif isinstance(x, dict):
            [walk(v) for v in x.values()]
        elif isinstance(x, (list, tuple)):
            [walk(v) for v in x]
    for o in parts:
        walk(list(o.state.values()))
    return sum(seen.values())


@pytest.mark.parametrize('method,max_factor_dim', [('muon', 4096), ('soap', 4096), ('psgd', 4096), ('soap', 256),
                                                    ('psgd', 256)])
def test_state_bytes_of_muon_soap_psgd_equal_the_real_optimizers(method, max_factor_dim):
    """Muon's momentum; SOAP's factors, bases and Adam moments on every parameter; PSGD's momentum and triangular
    Q's (heavyball keeps each as its n(n + 1)/2 upper triangle). An axis wider than max_factor_dim: SOAP leaves it
    unrotated, PSGD gives it a diagonal Q (n numbers)."""
    model, X, Y = small_model_and_batch()
    opt = build_optimizer(method, model, lr=1e-3, **({} if method == 'muon' else dict(max_factor_dim=max_factor_dim)))
    for _ in range(2):
        model(X, Y)[1].backward()
        opt.step()
        opt.zero_grad()
    blocks = sum(o * i for i, o in LAYERS)
    embeddings = [(65, 128), (64, 128)]  # tokens (tied to the lm_head), positions
    small = lambda n: n <= max_factor_dim  # noqa: E731
    by_hand = dict(muon=4 * blocks,
                   psgd=4 * (blocks + sum(n * (n + 1) // 2 if small(n) else n for layer in LAYERS for n in layer)),
                   soap=4 * (2 * 804_096 + 2 * sum(n * n for layer in LAYERS + embeddings for n in layer if small(n))))
    cost = step_cost(method, SMALL, N, max_factor_dim=max_factor_dim)
    assert optimizer_state_bytes(opt) == cost['state_bytes'] == by_hand[method]


def test_soap_and_psgd_flops_equal_torch_flop_counter():
    """A step of pytorch-optimizer's SOAP refreshing its bases (inv_update_freq 1): its factors, projections and
    power step, counted (its QR is not a matmul). heavyball's PSGD-Kron: a step with its preconditioner fit off
    (applying P) and the extra of a step with it (its triangular solves are not seen by the counter, and are added
    by hand), each exactly; the model's preconditioning over a run is the first plus the schedule's mean fit rate
    times the second."""
    model, X, Y = small_model_and_batch()
    soap = build_optimizer('soap', model, lr=1e-3, inv_update_freq=1)
    for _ in range(2):  # the first step only sets up the factors and bases
        model(X, Y)[1].backward()
        flops = counted(soap.step)
        soap.zero_grad()
    cost = step_cost('soap', SMALL, N, inv_update_freq=1)
    assert flops == cost['capture'] + cost['precond']
    # 128: five a block (LAYERS), the embeddings of tokens and positions; 65 the vocabulary, 64 the positions
    qrs = {128: 22, 384: 4, 512: 8, 65: 1, 64: 1}
    assert cost['decomp_by_size'] == pytest.approx({n: QR * n ** 3 * k for n, k in qrs.items()})

    model, X, Y = small_model_and_batch()
    psgd = build_optimizer('psgd', model, lr=1e-3)
    model(X, Y)[1].backward()
    with_fit = counted(psgd.step)  # heavyball fits on every one of its first 1,000 steps
    psgd.zero_grad()
    psgd.psgd.precond_schedule = lambda n: 0.0  # no fit from here on
    model(X, Y)[1].backward()
    apply = counted(psgd.step)
    solves = sum(n * n * m for i, o in LAYERS for n, m in ((i, o), (o, i)))  # Q^-T v along each axis
    fit = with_fit - apply + solves
    assert step_cost('psgd', SMALL, N, steps=1000)['precond'] == apply + fit
    for steps in (2000, 600_000):
        assert step_cost('psgd', SMALL, N, steps=steps)['precond'] == pytest.approx(
            apply + psgd_fit_fraction(steps) * fit, rel=1e-12)


def test_psgd_fit_fraction_is_the_mean_of_heavyballs_schedule():
    from heavyball.utils import precond_update_prob_schedule
    schedule = precond_update_prob_schedule()
    for steps in (1, 1000, 1001, 2500, 8000, 20000):
        mean = sum(schedule(n) for n in range(1, steps + 1)) / steps
        assert psgd_fit_fraction(steps) == pytest.approx(mean, rel=1e-9)  # float64 sums in another order
    with pytest.raises(ValueError, match='steps=0'):
        psgd_fit_fraction(0)


def test_decompositions_run_at_the_rate_of_their_size():
    """A table of rates {n: FLOP/s}: each factor's decomposition at its own size's rate (log-interpolated between
    the table's sizes, its end values beyond them); one number: all sizes alike."""
    table = {128: 1e10, 512: 3e10}
    assert rate_at(table, 128) == 1e10 and rate_at(table, 64) == 1e10 and rate_at(table, 4096) == 3e10
    assert rate_at(table, 256) == pytest.approx(2e10)  # halfway in log n
    three = {128: 1e10, 256: 2e10, 512: 6e10}
    assert rate_at(three, 384) == pytest.approx(2e10 + 4e10 * math.log(1.5) / math.log(2))  # in the upper segment
    assert rate_at(three, 181) == pytest.approx(1e10 + 1e10 * math.log(181 / 128) / math.log(2))
    assert rate_at(5e9, 300) == 5e9
    by_size = {128: 4 * 5 * EIGH * 128 ** 3, 384: 4 * EIGH * 384 ** 3, 512: 4 * 2 * EIGH * 512 ** 3}
    rates = dict(matmul_flops_per_s=1e11, fp32_matmul_flops_per_s=1e11, eigenbasis_flops_per_s=1e11,
                 eigh_flops_per_s=table, inverse_flops_per_s=1e10, bytes_per_s=1e10)
    for method, per, rate in (('fixed_fisher', EIGH, table), ('kfac', INVERSE, 1e10)):
        cost = step_cost(method, SMALL, N, inv_update_freq=1)
        # each layer's d_in and d_out (LAYERS): per block 128 five times, 384 once, 512 twice
        assert cost['decomp_by_size'] == {n: f * per / EIGH for n, f in by_size.items()}
        at = {128: 1e10, 384: 1e10 + 2e10 * math.log(3) / math.log(4), 512: 3e10} if rate is table else \
            dict.fromkeys(by_size, 1e10)  # table's rate at each size, by hand
        seconds = sum(f * per / EIGH / at[n] for n, f in by_size.items())
        assert step_seconds(cost, rates)['decomp'] == pytest.approx(seconds, rel=1e-12)
    assert step_seconds(step_cost('adamw', SMALL, N), rates)['decomp'] == 0


def test_each_part_runs_at_its_dtypes_matmul_rate():
    """On a GPU forward+backward runs in bfloat16, the factors and the preconditioning in float32 (TF32), Muon's
    Newton-Schulz in bfloat16, the eigenbasis solve as tf32x3: each part's seconds are its FLOPs over its rate, with
    the rates set apart."""
    rates = dict(matmul_flops_per_s=4e11, fp32_matmul_flops_per_s=1e11, eigenbasis_flops_per_s=3e10,
                 eigh_flops_per_s=1e10, inverse_flops_per_s=2e10, qr_flops_per_s=3e10, bytes_per_s=1e12)
    n_params = sum(p.numel() for p in small_model_and_batch()[0].parameters())  # AdamW's 16 bytes each
    for method in METHODS:
        cost = step_cost(method, SMALL, N)
        seconds = step_seconds(cost, rates)
        precond_rate = dict(muon=4e11, fixed_fisher=3e10, ekfac=3e10).get(method, 1e11)
        assert seconds['fwd_bwd'] == pytest.approx(cost['fwd_bwd'] / 4e11, rel=1e-12)
        assert seconds['capture'] == pytest.approx(cost['capture'] / 1e11, rel=1e-12)
        assert seconds['precond'] == pytest.approx(cost['precond'] / precond_rate, rel=1e-12)
        assert seconds['adamw'] == pytest.approx(16 * n_params / 1e12, rel=1e-12)
    assert step_cost('muon', SMALL, N)['precond'] > 0 and step_cost('kfac', SMALL, N)['capture'] > 0


@pytest.mark.parametrize('method', ['kfac', 'fixed_fisher', 'ekfac'])
def test_the_eigenbasis_rate_goes_to_the_methods_that_run_the_eigenbasis_solve(method, monkeypatch):
    """Which Kronecker methods precondition through kernels.eigenbasis_precondition (the Triton kernel on GPUs), as
    the real optimizer calls it, is which the model charges at the eigenbasis rate."""
    calls = []
    for module in (optim.eigenbasis, optim.kfac):
        monkeypatch.setattr(module, 'eigenbasis_precondition',
                            lambda *args, real=module.eigenbasis_precondition: calls.append(1) or real(*args))
    model, X, Y = small_model_and_batch()
    opt = build_optimizer(method, model, factor_update_freq=1, inv_update_freq=1, lr=1e-3)
    model(X, Y)[1].backward()
    opt.step()
    layers = [(opt.layer_state[g['name']], gradient_matrix(g)) for g in opt.param_groups if g['kind'] == 'kronecker']
    calls.clear()
    [opt.precondition(st, V) for st, V in layers]
    assert len(calls) in (0, len(layers)) and len(layers) == len(LAYERS)
    assert (step_cost(method, SMALL, N)['precond_rate'] == 'eigenbasis_flops_per_s') == (len(calls) == len(layers))


def test_calibrated_rates_on_a_cpu(monkeypatch):
    """Every key, the matmul rates one float32 measurement (the eigenbasis solve is torch's float32 products on a
    CPU), a separate float32 measurement where the matmul dtype is another, and TF32 allowed only while it runs."""
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's default
    rates = calibrate(sizes=(16, 32))
    assert list(rates) == list(RATE_KEYS) and not torch.backends.cuda.matmul.allow_tf32
    assert rates['fp32_matmul_flops_per_s'] == rates['matmul_flops_per_s'] == rates['eigenbasis_flops_per_s'] > 0
    assert sorted(rates['eigh_flops_per_s']) == [16, 32] and all(v > 0 for v in rates['qr_flops_per_s'].values())
    rates = calibrate(sizes=(16, 32), matmul_dtype=torch.bfloat16)
    assert rates['fp32_matmul_flops_per_s'] != rates['matmul_flops_per_s'] > 0
    assert rates['eigenbasis_flops_per_s'] == rates['fp32_matmul_flops_per_s']
    monkeypatch.setattr(torch.linalg, 'eigh', lambda M: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        calibrate(sizes=(16,))
    assert not torch.backends.cuda.matmul.allow_tf32  # restored after a failure too


def test_rates_saved_to_a_file_read_back_the_same(tmp_path, capsys):
    path = tmp_path / 'rates.json'
    assert main(['config/fixed_fisher_small.py', '--rates=cpu1', f'--save_rates={path}']) == 0
    assert load_rates(str(path)) == RATES['cpu1']  # the tables' sizes back to int
    assert main(['config/fixed_fisher_small.py', f'--rates={path}']) == 0
    assert capsys.readouterr().out.count('@1024') == 6  # three tables (eigh, inverse, qr), printed by both calls
    path.write_text(json.dumps(dict(matmul_flops_per_s=1e11)))
    with pytest.raises(ValueError, match='rates.json.*expected'):
        load_rates(str(path))
    with pytest.raises(ValueError, match="'nope' is neither a preset"):
        load_rates('nope')


def test_cli_prints_every_method_and_gpt2_sizes(capsys):
    assert main(['config/fixed_fisher_small.py']) == 0
    out = capsys.readouterr().out
    assert all(f'| {m} |' in out for m in ('adamw', 'kfac', 'fixed_fisher', 'ekfac', 'muon', 'soap', 'psgd'))
    assert main(['--set=n_layer=12', '--set=n_embd=768', '--tokens_per_step=524288', '--ranks=8', '--rates=h100',
                 '--methods=adamw,fixed_fisher']) == 0
    assert '124.' in capsys.readouterr().out  # GPT-2 small's parameters, 124M (vocab 50304)
    with pytest.raises(ValueError, match="'eva'"):
        step_cost('eva', SMALL, N)


def test_prediction_beside_a_timing_studys_measurement(tmp_path, capsys):
    """--measured: each method's predicted ms per part beside a timing study's, and both ratios to AdamW."""
    rates = ['--matmul_flops_per_s=1e11', '--fp32_matmul_flops_per_s=1e11', '--eigenbasis_flops_per_s=1e11',
             '--eigh_flops_per_s=1e10', '--inverse_flops_per_s=1e10', '--qr_flops_per_s=1e10', '--bytes_per_s=1e10']
    timing = tmp_path / 'results.json'
    timing.write_text(json.dumps(dict(rows=[
        dict(optimizer='adamw', status='ok', ms_per_iter=50.0, ms_fwd_bwd=45.0, iters=100),
        dict(optimizer='fixed_fisher', status='ok', ms_per_iter=100.0, ms_fwd_bwd=47.0, ms_decomp=20.0,
             ms_precond=30.0),
        dict(optimizer='fixed_fisher', status='ok', ms_per_iter=300.0),  # a variant (M&G's): the first row wins
        dict(optimizer='soap', status='ok', ms_per_iter=80.0, ms_fwd_bwd=45.0)])))
    assert main(['config/fixed_fisher_small.py', '--methods=adamw,kfac,fixed_fisher,soap,psgd', f'--measured={timing}',
                 *rates]) == 0
    out = capsys.readouterr().out
    assert 'on 1.000 of the steps of a 100-step run' in out  # PSGD's fit schedule over the timing runs' length
    table = out.split('| method | fwd+bwd predicted')[1]
    rows = {line.split(' | ')[0]: line for line in table.splitlines() if line.startswith('| ')}
    assert '| kfac' not in rows  # not measured
    ff, adamw = (step_cost(m, SMALL, N) for m in ('fixed_fisher', 'adamw'))
    fwd = 1e3 * (ff['fwd_bwd'] + ff['capture']) / 1e11
    total = fwd + 1e3 * (ff['decomp'] / 1e10 + ff['precond'] / 1e11 + ff['adamw_bytes'] / 1e10)
    base = 1e3 * (adamw['fwd_bwd'] / 1e11 + adamw['adamw_bytes'] / 1e10)
    assert rows['| fixed_fisher'].startswith(f"| fixed_fisher | {fwd:.1f} / 47.0 | {1e3 * ff['decomp'] / 1e10:.1f} "
                                             f"/ 20.0 | ")
    assert rows['| fixed_fisher'].endswith(f" | {total:.1f} / 100.0 | {total - base:.1f} / 50.0 | "
                                           f"{total / base:.2f} / 2.00 |")
    # SOAP builds its factors in its step: predicted with its preconditioning, not with forward+backward
    soap = step_cost('soap', SMALL, N)
    assert rows['| soap'].startswith(f"| soap | {1e3 * soap['fwd_bwd'] / 1e11:.1f} / 45.0 | "
                                     f"{1e3 * soap['decomp'] / 1e10:.1f} / — | "
                                     f"{1e3 * (soap['capture'] + soap['precond']) / 1e11:.1f} / — | ")
