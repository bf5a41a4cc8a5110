"""
Levenberg-Marquardt damping (Martens & Grosse, 2015, section 6.5), for KroneckerOptimizer.adapt_damping: the
quadratic model of a step delta on some batches, measured exactly, and the rule that moves lambda by its reduction
ratio rho = (h(theta + delta) - h(theta)) / (grad h^T delta + 1/2 delta^T F delta + 1/2 sum_layers lambda |delta|^2).
With step_rule='quadratic', on a step that solved for alpha and mu, the model is the one they minimised, as in the
paper: delta the preconditioned layers' update, M(delta) its predicted change, and h(theta + delta) taken with every
other parameter at theta and no weight decay (two forwards, no Jacobian-vector product); otherwise delta is the whole
step, the model measured by one forward-mode pass.
"""

import math

import torch
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from optim.capture import unwrap
from optim.distributed import mean_over_ranks


@torch.no_grad()
def quadratic_model(model, theta0, delta, batches):
    """(h(theta), grad h^T delta, delta^T F delta, h(theta + delta)) averaged over batches (and over DDP's ranks), h the
    mean cross-entropy of model(X, Y), theta0 and delta {parameter name: tensor}, the model's weights at theta + delta.
    F is the exact Fisher (the Gauss-Newton matrix of softmax cross-entropy), from one forward-mode Jacobian-vector
    product: F = J^T (diag(p) - p p^T) J / tokens. Eval mode: no dropout, and the factor hooks record nothing."""
    was_training = model.training
    model.eval()
    device = next(iter(theta0.values())).device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # h(theta), grad h.delta, dFd, h(theta+d)
    try:
        for X, Y in batches:
            def loss_and_logits(weights):
                logits, loss = functional_call(model, weights, (X, Y))
                return loss, logits
            with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):  # fused attention has no forward-mode AD
                (h0, logits), (dh, dlogits) = jvp(loss_and_logits, (theta0,), (delta,))
            p = logits.float().softmax(-1)
            Jd = dlogits.float()  # J delta, per token (B, T, vocab)
            dFd = ((p * Jd * Jd).sum(-1) - (p * Jd).sum(-1).square()).mean()
            h1 = model(X, Y)[1]
            sums += torch.stack([h0.detach(), dh.detach(), dFd, h1.detach()]).double()
    finally:
        model.train(was_training)
    return mean_over_ranks(sums, len(batches)).tolist()


@torch.no_grad()
def mean_losses(model, weight_sets, batches):
    """[h(weights) for weights in weight_sets] ({parameter name: tensor}), each the mean loss over batches (and over
    DDP's ranks) in eval mode (no dropout, no factor hooks)."""
    was_training = model.training
    model.eval()
    try:
        sums = torch.stack([sum(functional_call(model, w, (X, Y))[1].double() for X, Y in batches)
                            for w in weight_sets])
    finally:
        model.train(was_training)
    return mean_over_ranks(sums, len(batches)).tolist()


def levenberg_marquardt(damping, rho, predicted, update_freq):
    """lambda <- omega lambda if rho > 3/4, lambda / omega if rho < 1/4, omega = (19/20)^T1, kept in [1e-10, 1e10];
    a rho that is not finite, or a step the model predicts to raise the loss (predicted >= 0), leaves lambda."""
    if math.isfinite(rho) and predicted < 0:
        omega = (19 / 20) ** update_freq
        if rho > 0.75:
            return max(damping * omega, 1e-10)
        if rho < 0.25:
            return min(damping / omega, 1e10)
    return damping


@torch.no_grad()
def adapt_damping(opt, model, batches):
    """The Levenberg-Marquardt update of opt.damping (KroneckerOptimizer's docstring) from the reduction ratio of the
    last step on batches, a list of (X, Y) with model(X, Y) -> (logits, mean loss); a no-op unless lm_pending.
    Under DDP every rank passes its own micro-batches: the four sums are averaged over ranks. Returns rho."""
    if opt._lm_before is None:
        return None
    params = [p for g in opt.param_groups for p in g['params']]
    before, opt._lm_before = opt._lm_before, None
    model = unwrap(model)
    names = {p: n for n, p in model.named_parameters()}
    theta0 = {names[p]: p0 for p, p0 in zip(params, before)}
    if opt.step_rule == 'quadratic' and opt.qm_solved_step == opt.steps - 1:  # the step's own quadratic model
        moved = dict(theta0)
        for group in opt.param_groups:
            st = opt.layer_state.get(group.get('name'), {}) if group['kind'] == 'kronecker' else {}
            if st.get('qm_step') == opt.steps - 1:  # a layer this step moved
                delta, (W, *b) = st['qm_update'], group['params']
                moved[names[W]] = theta0[names[W]] + delta[:, :W.shape[1]].to(W.dtype)
                if b:
                    moved[names[b[0]]] = theta0[names[b[0]]] + delta[:, -1].to(W.dtype)
        (h0, h1), predicted = mean_losses(model, [theta0, moved], batches), opt.qm_predicted
    else:
        delta = {names[p]: (p.detach() - p0).to(p0.dtype) for p, p0 in zip(params, before)}
        h0, dh, dFd, h1 = quadratic_model(model, theta0, delta, batches)
        lam_term = 0.0
        for group in opt.param_groups:
            if group['kind'] == 'kronecker':
                st, d = opt.layer_state[group['name']], [delta[names[p]] for p in group['params']]
                lam = float(torch.as_tensor(st.get('damping_eff', opt.damping), dtype=torch.float64).mean())
                lam_term += lam * sum(float(x.double().square().sum()) for x in d)
        predicted = dh + 0.5 * (dFd + lam_term)
    rho = (h1 - h0) / predicted if predicted != 0 else float('nan')
    opt.lm_ratio = rho
    opt.damping = levenberg_marquardt(opt.damping, rho, predicted, opt.damping_update_freq)
    return rho
