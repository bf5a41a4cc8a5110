"""
Step size and momentum from the quadratic model (Martens & Grosse, 2015, section 7), KroneckerOptimizer's
step_rule='quadratic'. With Delta = -U the preconditioned direction of the preconditioned layers and delta0 their
previous update, the update is delta = alpha Delta + mu delta0, with (alpha, mu) the minimiser of

    M(delta) = grad h^T delta + 1/2 delta^T C delta,   C = F + lambda I

on the step's batches, F the exact Fisher (the Gauss-Newton matrix of the softmax cross-entropy, by one
Jacobian-vector product per direction) and lambda each layer's damping in use: M&G's eq. (11),

    [Delta^T C Delta    Delta^T C delta0 ] [alpha]     [grad h^T Delta ]
    [delta0^T C Delta   delta0^T C delta0] [mu   ] = - [grad h^T delta0]

and without delta0 (the first step, or momentum = 0) mu = 0, alpha = -grad h^T Delta / Delta^T C Delta. The
scheduled lr only caps alpha (a large lr leaves it free); grafting and the KL clip are off. grad h is the step's
gradient V as step() sees it (after train.py's grad_clip, if any). Weight decay stays decoupled, outside the model, at the rate
of the AdamW part: W <- (1 - lr adamw_lr_scale wd) W (lr is only alpha's cap here; at the cap's rate, lr = 1 and wd
= 0.1 would shrink W by a tenth a step), the shrink per step of the grafted configs whose lr AdamW's is. Cost per solve: one forward-mode pass per
direction (two with momentum), about 1.5 forwards each; step_rule_freq > 1 reuses alpha and mu in between.
"""

import torch
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from optim.capture import unwrap
from optim.distributed import mean_over_ranks


@torch.no_grad()
def fisher_forms(model, params, tangents, batches):
    """[[t_i^T F t_j]] (k x k, float64) for tangents, a list of {parameter name: tensor} over params {name: tensor}:
    F = the mean over the batches' tokens of J^T (diag(p) - p p^T) J, J the logits' Jacobian, p their softmax;
    eval mode (no dropout), averaged over DDP's ranks. batches: [(X, Y)] with model(X, Y) -> (logits, loss)."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    k = len(tangents)
    out = torch.zeros(k, k, dtype=torch.float64, device=next(iter(params.values())).device)
    try:
        for X, Y in batches:
            Js = []
            for t in tangents:
                with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):  # fused attention has no forward-mode AD
                    logits, Jt = jvp(lambda w: functional_call(model, w, (X, Y))[0], (params,), (t,))
                Js.append(Jt.to(torch.promote_types(Jt.dtype, torch.float32)))
            p = logits.to(Js[0].dtype).softmax(-1)
            pJ = [(p * J).sum(-1) for J in Js]
            for i in range(k):
                for j in range(i, k):
                    out[i, j] = out[j, i] = out[i, j] + ((p * Js[i] * Js[j]).sum(-1) - pJ[i] * pJ[j]).double().mean()
    finally:
        model.train(was_training)
    return mean_over_ranks(out, len(batches))


def step_sizes(g, C, cap=None):
    """(alpha, mu, predicted M(delta)) minimising g^T x + 1/2 x^T C x over x = (alpha, mu) (k = 2), or alpha alone
    (k = 1, mu = 0); alpha capped at cap. A singular 2 x 2 system (delta0 parallel to Delta) falls back to k = 1."""
    g, C = g.double(), C.double()
    x = None
    if len(g) == 2 and torch.linalg.det(C) > 1e-12 * C[0, 0] * C[1, 1]:
        x = torch.linalg.solve(C, -g)
    if x is None:
        x = torch.stack([-g[0] / C[0, 0], torch.zeros_like(g[0])])
        g, C = torch.stack([g[0], torch.zeros_like(g[0])]), torch.diag(torch.stack([C[0, 0], torch.ones_like(g[0])]))
    if cap is not None and x[0] > cap:  # alpha at the cap, mu the minimiser given it
        x = torch.stack([torch.as_tensor(cap, dtype=x.dtype), -(g[1] + C[1, 0] * cap) / C[1, 1]])
    predicted = g @ x + 0.5 * x @ C @ x
    return float(x[0]), float(x[1]), float(predicted)


def quadratic_step(opt, active, Us):
    """step_rule='quadratic': adds delta = alpha Delta + mu delta0 to each preconditioned layer's [W | b] (and its
    decoupled weight decay, module docstring), active [(group, st, V)] and Us their U. alpha, mu are solved on the batches given by
    opt.set_quadratic_batches(model, batches) every step_rule_freq steps and reused in between; logged as qm_alpha,
    qm_mu and qm_predicted (M(delta) of the last solve)."""
    directions = [-U for U in Us]
    momentum = active[0][0]['momentum'] > 0
    previous = [st.get('qm_update') for _, st, _ in active]
    use_previous = momentum and all(d is not None for d in previous)
    if opt.steps % opt.step_rule_freq == 0:
        if opt.quadratic_batches is None:
            raise RuntimeError("step_rule='quadratic': call optimizer.set_quadratic_batches(model, batches) with the "
                               "step's micro-batches before step()")
        model, batches = opt.quadratic_batches
        sets = [directions] + ([previous] if use_previous else [])
        names = {p: n for n, p in unwrap(model).named_parameters()}
        params = {names[p]: p.detach() for group, _, _ in active for p in group['params']}
        C = fisher_forms(model, params, [layer_tangents(active, mats, names) for mats in sets], batches).cpu()
        lams = [float(torch.as_tensor(st.get('damping_eff', opt.damping), dtype=torch.float64).mean())
                for _, st, _ in active]
        g = torch.zeros(len(sets), dtype=torch.float64)
        for i, a in enumerate(sets):
            g[i] = sum(float((V.double() * A.double()).sum()) for (_, _, V), A in zip(active, a))
            for j, b in enumerate(sets):  # + lambda I, per layer
                C[i, j] += sum(lam * float((A.double() * B.double()).sum()) for lam, A, B in zip(lams, a, b))
        opt.qm_alpha, opt.qm_mu, opt.qm_predicted = step_sizes(g, C, active[0][0]['lr'])
        opt.qm_solved_step = opt.steps  # damping_schedule='lm' takes this step's rho from this model
        opt.quadratic_batches = None
    for (group, st, _), D, P in zip(active, directions, previous):
        delta = opt.qm_alpha * D + (opt.qm_mu * P if use_previous else 0)
        st['qm_update'], st['qm_step'] = delta, opt.steps
        W = group['params'][0]
        W.mul_(1 - group['lr'] * opt.adamw_lr_scale * group['weight_decay'])  # decoupled, at AdamW's rate
        W.add_(delta[:, :W.shape[1]].to(W.dtype))
        if len(group['params']) == 2:
            group['params'][1].add_(delta[:, -1].to(W.dtype))


def layer_tangents(active, mats, names):
    """{parameter name: its block of mats} ([W | b] matrices, one per active layer)."""
    t = {}
    for (group, _, _), M in zip(active, mats):
        W = group['params'][0]
        t[names[W]] = M[:, :W.shape[1]].to(W.dtype)
        if len(group['params']) == 2:
            t[names[group['params'][1]]] = M[:, -1].to(W.dtype)
    return t
