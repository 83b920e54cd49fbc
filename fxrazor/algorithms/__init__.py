"""Training algorithms around a supernet, on plain PyTorch: each an ``nn.Module`` with
``train_step(batch, optimizer) -> losses`` and ``export() -> frozen subnet``.

See :mod:`fxrazor.algorithms.base` for what they share (seeded sampling, checks, one
gradient synchronisation per step under ``torch.distributed``). The sampling ones:
:class:`SPOS` (one random subnet per step), :class:`AutoSlim` and :class:`BigNAS` (the
sandwich rule with in-place distillation, over the widths or over every key) and
:class:`SlimmableNetwork` (fixed widths, switchable BatchNorm). The differentiable ones:
:class:`DARTS` (bi-level, first or second order), :class:`DSNAS` (one-hot ops, resource
loss); the pruners :class:`DCFF` (fusion with a temperature schedule) and :class:`DMCP`
(Markov channel pruning towards a FLOPs target).
"""

from fxrazor.algorithms.autoslim import AutoSlim
from fxrazor.algorithms.base import BaseAlgorithm, distributed_world
from fxrazor.algorithms.bignas import BigNAS
from fxrazor.algorithms.darts import DARTS
from fxrazor.algorithms.dcff import DCFF
from fxrazor.algorithms.dmcp import DMCP
from fxrazor.algorithms.dsnas import DSNAS
from fxrazor.algorithms.slimmable import SlimmableNetwork
from fxrazor.algorithms.spos import SPOS

__all__ = ["DARTS", "DCFF", "DMCP", "DSNAS", "SPOS", "AutoSlim", "BaseAlgorithm", "BigNAS",
           "SlimmableNetwork", "distributed_world"]
