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
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    params = inspect.signature(OPTIMIZERS[name]).parameters
    return {k: config[k] for k in params if k != 'model' and k in config}
