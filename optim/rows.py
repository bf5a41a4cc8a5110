"""
Per-token rows for the methods that need more than summed factors (EKFAC, iEF, KPSVD): a FactorCapture
(optim/capture.py) whose statistic also keeps the rows it was computed from, a (M, d_in [+1]) and g_hat (M, d_out)
of one optimizer step (its micro-steps concatenated in order), and puts them in the layer's state as st['rows']
for that step only: clear(), which step() calls when it ends and zero_grad() calls, removes them.

Memory: M (d_in + d_out) numbers per hooked layer on factor-update steps only. Under DDP, FactorCapture.take()
all-gathers the rows (optim/distributed.py): every rank then holds the global batch's tokens.
"""

import torch

from optim.capture import FactorCapture


class Rows:
    """A statistic's value with the rows it came from. FactorCapture adds a step's micro-steps (0 + r, then r + r':
    values add, rows concatenate) and divides by the token count (the value is averaged, the rows stay)."""

    def __init__(self, value, rows):
        self.value, self.rows = value, rows

    def __radd__(self, other):  # 0 + r: the first micro-step
        return self if isinstance(other, int) and other == 0 else NotImplemented

    def __add__(self, other):
        return Rows(self.value + other.value, torch.cat([self.rows, other.rows]))

    def __truediv__(self, n):
        return Rows(self.value / n, self.rows)


class RowCapture(FactorCapture):
    """FactorCapture that also hands each layer its step's rows, st['rows'] = (a, g_hat), in layer_state (the
    optimizer's {name: st}). reduce(st, A, G) -> (A_new, G_new), if given, turns the step's summed factors into
    the ones the optimizer averages (KPSVD's Kronecker pair, iEKFAC's rescaled G); it may read st['rows']."""

    def __init__(self, modules, statistic, dtypes, layer_state, reduce=None):
        self.layer_state, self.reduce = layer_state, reduce
        super().__init__(modules, lambda x: Rows(statistic(x), x), dtypes)

    def take(self):
        out = {}
        for name, (a, g) in super().take().items():  # super().take() clears, and with it the last step's rows
            st = self.layer_state[name]
            st['rows'] = (a.rows, g.rows)  # (M, d_in [+1]), (M, d_out)
            if self.reduce is None:
                out[name] = (a.value, g.value)
                continue
            with self.timer('factors', a.rows.device):  # counted with the factors (ms_factors)
                out[name] = self.reduce(st, a.value, g.value)
        return out

    def clear(self):
        super().clear()
        for st in self.layer_state.values():
            st.pop('rows', None)


def keep_rows(opt, reduce=None):
    """Replaces opt's FactorCapture by a RowCapture over the same layers, statistic and dtypes (hooks re-armed on
    the same schedule)."""
    old = opt.capture
    old.disarm()
    opt.capture = RowCapture(old.modules, old.statistic, old.dtypes, opt.layer_state, reduce)
    opt.timer = opt.capture.timer
    opt._arm()
