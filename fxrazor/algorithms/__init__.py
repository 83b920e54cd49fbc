"""Training algorithms around a supernet, on plain PyTorch: each an ``nn.Module`` with
``train_step(batch, optimizer) -> losses`` and ``export() -> frozen subnet``.

See :mod:`fxrazor.algorithms.base` for what they share (seeded sampling, checks, one
gradient synchronisation per step under ``torch.distributed``). The sampling ones:
:class:`SPOS` (one random subnet per step), :class:`AutoSlim` and :class:`BigNAS` (the
sandwich rule with in-place distillation, over the widths or over every key) and
:class:`SlimmableNetwork` (fixed widths, switchable BatchNorm).
"""

from fxrazor.algorithms.autoslim import AutoSlim
from fxrazor.algorithms.base import BaseAlgorithm, distributed_world
from fxrazor.algorithms.bignas import BigNAS
from fxrazor.algorithms.slimmable import SlimmableNetwork
from fxrazor.algorithms.spos import SPOS

__all__ = ["AutoSlim", "BaseAlgorithm", "BigNAS", "SPOS", "SlimmableNetwork",
           "distributed_world"]
