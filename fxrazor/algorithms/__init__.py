"""Training algorithms around a supernet, on plain PyTorch: each an ``nn.Module`` with
``train_step(batch, optimizer) -> losses`` and ``export() -> frozen subnet``.

See :mod:`fxrazor.algorithms.base` for what they share (seeded sampling, checks, one
gradient synchronisation per step under ``torch.distributed``).
"""

from fxrazor.algorithms.base import BaseAlgorithm, distributed_world

__all__ = ["BaseAlgorithm", "distributed_world"]

# The differentiable searches and pruners (DARTS, DSNAS, DCFF, DMCP).
from fxrazor.algorithms.darts import DARTS
from fxrazor.algorithms.dsnas import DSNAS

__all__ += ["DARTS", "DSNAS"]
from fxrazor.algorithms.dcff import DCFF
from fxrazor.algorithms.dmcp import DMCP

__all__ += ["DCFF", "DMCP"]
