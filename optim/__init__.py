"""
Optimizers, picked by name: `optimizer = 'kfac'` in a config, `build_optimizer('kfac', model, **cfg)` in code.
A dict is the registry; each optimizer lives in its own file.
"""

import inspect

from optim.adamw import adamw
from optim.dykaf import DyKAF
from optim.ekfac import EKFAC
from optim.eva import EVA
from optim.fixed_fisher import FixedFisher
from optim.ief import IEF, IEKFAC
from optim.kfac import KFAC
from optim.kpsvd import KFACCorrected, KPSVD
from optim.muon import muon
from optim.psgd import psgd
from optim.soap import soap

OPTIMIZERS = {
    'adamw': adamw,
    'kfac': KFAC,
    'eva': EVA,
    'fixed_fisher': FixedFisher,
    'ekfac': EKFAC,  # the other Fisher approximations of the literature, on the same factor capture
    'ief': IEF,
    'iekfac': IEKFAC,
    'kpsvd': KPSVD,
    'kfac_corrected': KFACCorrected,
    'dykaf': DyKAF,
    'muon': muon,  # baselines a user would pick instead of a Kronecker method
    'soap': soap,
    'psgd': psgd,
}


def build_optimizer(name, model, **cfg):
    """Returns a torch.optim.Optimizer for model's parameters. cfg holds the optimizer's keyword arguments;
    an argument the optimizer does not take is a TypeError naming it."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name](model, **cfg)


def optimizer_kwargs(name, config):
    """The subset of config (e.g. train.py's globals) that optimizer `name` takes as keyword arguments,
    so that a config global such as `damping` reaches every optimizer that has a `damping` argument."""
    return {k: config[k] for k in accepted_args(name) if k in config}


def accepted_args(name):
    """The keyword arguments optimizer `name` takes: its own and, where its __init__ passes **kwargs on to its base
    class (KFAC: solve, then KroneckerOptimizer's), the base's, down to the first __init__ without **kwargs; less
    the method's `unused` ones."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    factory = OPTIMIZERS[name]
    inits = [c.__init__ for c in factory.__mro__ if '__init__' in vars(c)] if inspect.isclass(factory) else [factory]
    names = []
    for init in inits:
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name not in ('self', 'model')]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    unused = getattr(factory, 'unused', ())  # shared knobs a method does not take (DyKAF: momentum, damping, ...)
    return [n for n in dict.fromkeys(names) if n not in unused]
