"""Feature distillation: record named modules' outputs and compare student with teacher.

A *pair* names a student module and a teacher module by their paths (the names of
``model.named_modules()``); :class:`ModuleOutputsRecorder` keeps each named module's latest
output through a forward hook, and :class:`FeatureDistiller` turns the recorded pairs into
one loss. A pruned student's features are narrower than the teacher's, so a pair whose
channel counts differ gets a learnable *connector* (MMRazor's word): a 1x1 convolution for
channel-first maps ``(N, C, *spatial)``, a linear layer on the last dim for ``(N, C)`` and
``(N, L, C)``. Pairs of equal shape are compared directly.

Which paths exist: in a plain module, every name of ``named_modules()`` whose module's
``forward`` runs. In a ``torch.fx.GraphModule`` (``fxrazor.freeze``'s result) only the
modules the graph calls run (its ``call_module`` targets: usually the leaves, such as
``features.0.0``, not the ``Sequential`` around them); :func:`feature_paths` lists them,
and a path whose module never runs is refused with that list. Freezing keeps the original
model's module names, so a frozen subnet's ``features.1.2`` pairs with the original
model's ``features.1.2``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> teacher = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> student = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> fd = FeatureDistiller(student, teacher, {"1": "1"})
    >>> fd.prepare(torch.randn(2, 1, 6, 6))  # builds the 4 -> 8 channel connector
    >>> type(fd.connectors["1"]).__name__
    'Conv2d'
    >>> x = torch.randn(2, 1, 6, 6)
    >>> _ = student(x), teacher(x)  # the hooks record both models' ReLU outputs
    >>> fd.loss().dim()
    0
    >>> fd.remove()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.errors import InvalidArgumentError

__all__ = ["FeatureDistiller", "ModuleOutputsRecorder", "feature_paths", "make_connector"]

logger = logging.getLogger(__name__)

FeatureLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_CONVS: dict[int, type[nn.Module]] = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}


def feature_paths(model: nn.Module) -> list[str]:
    """The module paths whose outputs a hook on ``model`` can record.

    For a ``torch.fx.GraphModule`` these are the targets of its ``call_module`` nodes (in
    graph order); for any other module every submodule's name (the root ``""`` left out).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> sn = fxrazor.convert(nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU()),
        ...                                    nn.Linear(8, 2)), torch.randn(1, 4))
        >>> feature_paths(fxrazor.freeze(sn))
        ['0.0', '0.1', '1']
    """
    if isinstance(model, torch.fx.GraphModule):
        seen = dict.fromkeys(str(n.target) for n in model.graph.nodes if n.op == "call_module")
        return list(seen)
    return [name for name, _ in model.named_modules() if name]


class ModuleOutputsRecorder:
    """Keep the latest output of each named module of ``model`` (MMRazor's recorder).

    Hooks are put in at construction and taken out by :meth:`remove` (or at the end of a
    ``with`` block). A module's output is kept as it is, with its autograd graph, so a loss
    on it trains the model; ``ReLU(inplace=True)`` right after a recorded module changes the
    kept tensor too, so record the ReLU instead.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> with ModuleOutputsRecorder(net, ["0"]) as rec:
        ...     _ = net(torch.randn(2, 3))
        ...     rec.data["0"].shape
        torch.Size([2, 4])
    """

    def __init__(self, model: nn.Module, paths: list[str], role: str = "model") -> None:
        self.role = role
        self.paths = list(paths)
        self.data: dict[str, torch.Tensor] = {}
        runnable = feature_paths(model)
        self._hooks = []
        for path in self.paths:
            if path not in runnable:
                self.remove()
                raise InvalidArgumentError(_unknown_path(role, path, model, runnable))
            module = model.get_submodule(path)
            self._hooks.append(module.register_forward_hook(self._keeper(path)))

    def _keeper(self, path: str) -> Callable[..., None]:
        def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise InvalidArgumentError(
                    f"{self.role} module {path!r} returned a {type(output).__name__}, not a "
                    f"tensor; pair a module that returns one tensor")
            self.data[path] = output
        return keep

    def get(self, path: str) -> torch.Tensor:
        """The recorded output of ``path``; refused when that module did not run."""
        if path not in self.data:
            raise InvalidArgumentError(
                f"{self.role} module {path!r} recorded nothing: run a forward of the "
                f"{self.role} first, or pick a module its forward calls")
        return self.data[path]

    def clear(self) -> None:
        """Drop the recorded outputs (and the autograd graphs they hold)."""
        self.data.clear()

    def remove(self) -> None:
        """Take the hooks out and drop the recordings."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.clear()

    def __enter__(self) -> ModuleOutputsRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _unknown_path(role: str, path: str, model: nn.Module, runnable: list[str]) -> str:
    known = dict(model.named_modules())
    hint = ", ".join(runnable[:12]) + (", ..." if len(runnable) > 12 else "")
    if path in known:  # an fx container: it exists but the graph calls its children
        why = (f"is a submodule of the {type(model).__name__} that its graph never calls "
               f"(a GraphModule calls its leaves)")
    else:
        why = "is not a submodule path"
    return (f"{role} module {path!r} {why}; pick one of feature_paths({role}): {hint}")


def make_connector(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module | None:
    """A layer that maps a student feature to the teacher's shape, or None if equal.

    ``(N, C, *spatial)`` maps (1 to 3 spatial dims, equal spatial sizes) get a 1x1 conv
    over channels; ``(N, C)`` and ``(N, L, C)`` a linear layer over the last dim. Any other
    difference is refused: pass your own module in ``FeatureDistiller(connectors=...)``.

    Example:
        >>> make_connector(torch.Size([2, 4, 5, 5]), torch.Size([2, 8, 5, 5]))
        Conv2d(4, 8, kernel_size=(1, 1), stride=(1, 1), bias=False)
        >>> make_connector(torch.Size([2, 3]), torch.Size([2, 3])) is None
        True
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if s == t:
        return None
    differ = [d for d in range(len(s)) if len(s) == len(t) and s[d] != t[d]]
    if len(differ) == 1 and differ[0] == len(s) - 1 and len(s) in (2, 3):
        return nn.Linear(s[-1], t[-1], bias=False)
    if len(differ) == 1 and differ[0] == 1 and len(s) in _CONVS:
        return _CONVS[len(s)](s[1], t[1], kernel_size=1, bias=False)
    raise InvalidArgumentError(
        f"student feature {s} cannot be mapped to the teacher's {t} by a 1x1 conv over dim "
        f"1 or a linear layer over the last dim; pair modules whose outputs differ in "
        f"channels only, or pass connectors={{path: module}}")


class FeatureDistiller(nn.Module):
    """A loss between paired student and teacher module outputs (see the module doc).

    The distiller is an ``nn.Module`` whose parameters are its connectors only (the
    student and teacher are held, not registered): give them to the optimizer.

    Args:
        student, teacher: the two models; hooks go in at construction.
        pairs: ``{student path: teacher path}``.
        loss: ``"mse"`` (mean squared error), ``"l1"``, or ``fn(student_feature,
            teacher_feature) -> scalar`` (the teacher's feature comes detached).
        weights: one weight for every pair or ``{student path: weight}`` (missing: 1).
        connectors: ``{student path: module}`` used instead of the built connectors.

    Connectors are built by :meth:`prepare` (one forward of both models without
    gradients) or at the first :meth:`loss`; an optimizer made before that misses them.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, pairs: Mapping[str, str], *,
                 loss: str | FeatureLoss = "mse", weights: float | Mapping[str, float] = 1.0,
                 connectors: Mapping[str, nn.Module] | None = None) -> None:
        super().__init__()
        if student is teacher:
            raise InvalidArgumentError("student and teacher are the same module")
        if not isinstance(pairs, Mapping) or not pairs:
            raise InvalidArgumentError(
                f"pairs is a non-empty {{student path: teacher path}} dict, got {pairs!r}")
        self.pairs = {str(s): str(t) for s, t in pairs.items()}
        self.loss_fn = _loss_fn(loss)
        self.weights = _weights(weights, self.pairs)
        for path in connectors or {}:
            if path not in self.pairs:
                raise InvalidArgumentError(f"connector for {path!r}, which no pair names")
        self.connectors = nn.ModuleDict()
        self._given = {_key(p): m for p, m in (connectors or {}).items()}
        self._built = False
        self._models = (student, teacher)  # a tuple: not registered as submodules
        self.student_recorder = ModuleOutputsRecorder(student, list(self.pairs), "student")
        try:
            self.teacher_recorder = ModuleOutputsRecorder(
                teacher, list(dict.fromkeys(self.pairs.values())), "teacher")
        except InvalidArgumentError:
            self.student_recorder.remove()
            raise

    @torch.no_grad()
    def prepare(self, inputs: Any) -> None:
        """Run both models once on ``inputs`` (in eval mode, no gradients, modes put back)
        to build the connectors; then create the optimizer."""
        student, teacher = self._models
        modes = [(m, m.training) for m in (*student.modules(), *teacher.modules())]
        try:
            student.eval()
            teacher.eval()
            call_model(student, inputs)
            call_model(teacher, inputs)
            self._build()
        finally:
            for module, mode in modes:
                module.training = mode
            self.student_recorder.clear()
            self.teacher_recorder.clear()

    def _build(self) -> None:
        if self._built:
            return
        for s_path, t_path in self.pairs.items():
            key = _key(s_path)
            s, t = self.student_recorder.get(s_path), self.teacher_recorder.get(t_path)
            conn = self._given.get(key)
            if conn is None:
                conn = make_connector(s.shape, t.shape)
            if conn is not None:
                ref = next(self._models[0].parameters(), s)
                self.connectors[key] = conn.to(device=s.device, dtype=ref.dtype)
                logger.info("connector %s: %s -> %s", s_path, tuple(s.shape), tuple(t.shape))
        self._built = True

    def loss(self) -> torch.Tensor:
        """The weighted sum over pairs of ``loss(connector(student), teacher)`` on the last
        forward of both models; the recordings are dropped afterwards."""
        self._build()
        total = torch.zeros(())
        for s_path, t_path in self.pairs.items():
            s = self.student_recorder.get(s_path)
            t = self.teacher_recorder.get(t_path).detach()
            key = _key(s_path)
            if key in self.connectors:
                s = self.connectors[key](s)
            if s.shape != t.shape:
                raise InvalidArgumentError(
                    f"student {s_path!r} gives {tuple(s.shape)} (after its connector) but "
                    f"teacher {t_path!r} gives {tuple(t.shape)}")
            total = total.to(s.device) + self.weights[s_path] * self.loss_fn(s, t)
        self.student_recorder.clear()
        self.teacher_recorder.clear()
        return total

    def remove(self) -> None:
        """Take every hook out of the student and the teacher."""
        self.student_recorder.remove()
        self.teacher_recorder.remove()

    def __enter__(self) -> FeatureDistiller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _key(path: str) -> str:
    return path.replace(".", "/")  # ModuleDict keys may not hold dots


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(inputs)``: a mapping as keywords, a tuple or list as positional inputs."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _loss_fn(loss: str | FeatureLoss) -> FeatureLoss:
    if loss == "mse":
        return F.mse_loss
    if loss == "l1":
        return F.l1_loss
    if callable(loss):
        return loss
    raise InvalidArgumentError(f"loss is 'mse', 'l1' or a callable, got {loss!r}")


def _weights(weights: float | Mapping[str, float], pairs: Mapping[str, str]) -> dict[str, float]:
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(pairs))
        if unknown:
            raise InvalidArgumentError(f"weights name {unknown}, which no pair names")
        return {p: float(weights.get(p, 1.0)) for p in pairs}
    if isinstance(weights, bool) or not isinstance(weights, (int, float)):
        raise InvalidArgumentError(f"weights is a number or a dict, got {weights!r}")
    return dict.fromkeys(pairs, float(weights))
