"""Knowledge distillation: a student learns the teacher's softened outputs.

``kd_loss`` is Hinton et al.'s logit loss, ``KL(softmax(t / T) || softmax(s / T)) * T**2``
averaged over the batch (the ``T**2`` keeps gradient sizes comparable across
temperatures). The algorithms use it for in-place distillation (the largest subnet
teaches the others); on its own it fine-tunes a pruned model from the original:
:func:`finetune` trains a student (e.g. ``fxrazor.freeze(sn)``) on
``(1 - kd_weight) * criterion + kd_weight * kd_loss`` plus, with ``feature_pairs``, a
:class:`~fxrazor.distill_features.FeatureDistiller` loss between named modules' outputs.
The recipe "prune, distill, prune again" is ``prune``, ``freeze``, ``finetune``, then
``convert`` the fine-tuned student and prune it further.

Example:
    >>> import torch
    >>> t = torch.tensor([[2.0, 0.0]])
    >>> float(kd_loss(t, t))
    0.0
    >>> round(float(kd_loss(torch.zeros(1, 2), t, temperature=1.0)), 4)  # 0.881 ln 1.762 + 0.119 ln 0.238
    0.3278
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.distill_features import (
    FeatureDistiller,
    FeatureLoss,
    ModuleOutputsRecorder,
    call_model,
)
from fxrazor.errors import InvalidArgumentError

__all__ = ["FeatureDistiller", "ModuleOutputsRecorder", "distill_loss", "finetune", "kd_loss"]

logger = logging.getLogger(__name__)

Criterion = Callable[[Any, Any], torch.Tensor]
Loader = Iterable[Any] | Callable[[int], Iterable[Any]]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0
            ) -> torch.Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, summed over classes (the last
    dim) and averaged over the other dims; the teacher is detached."""
    if not temperature > 0:
        raise InvalidArgumentError(f"temperature must be > 0, got {temperature!r}")
    if student.shape != teacher.shape:
        raise InvalidArgumentError(f"student logits {tuple(student.shape)} and teacher "
                                   f"logits {tuple(teacher.shape)} differ in shape")
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher.detach() / temperature, dim=-1)
    per_row = (log_t.exp() * (log_t - log_s)).sum(-1)
    return per_row.mean() * temperature ** 2


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 targets: Any = None, *, kd_weight: float = 0.5, temperature: float = 4.0,
                 criterion: Criterion | None = None, features: FeatureDistiller | None = None,
                 feature_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The fine-tuning loss and its parts: ``{"loss", "kd"}`` plus ``"ce"`` (the
    ``criterion``, cross-entropy by default) where ``kd_weight < 1`` and ``"feature"`` with
    ``features``. ``loss = (1 - kd_weight) * ce + kd_weight * kd + feature_weight * feature``.

    Example:
        >>> s, t = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
        >>> parts = distill_loss(s, t, torch.tensor([0, 1]), kd_weight=0.25, temperature=1.0)
        >>> sorted(parts), round(float(parts["ce"]), 4)  # ln 3
        (['ce', 'kd', 'loss'], 1.0986)
        >>> bool(parts["loss"] == 0.75 * parts["ce"] + 0.25 * parts["kd"])
        True
    """
    if not 0 <= kd_weight <= 1:
        raise InvalidArgumentError(f"kd_weight is in [0, 1], got {kd_weight!r}")
    parts = {"kd": kd_loss(student_logits, teacher_logits, temperature)}
    loss = kd_weight * parts["kd"]
    if kd_weight < 1:
        if targets is None:
            raise InvalidArgumentError("targets are needed where kd_weight < 1 (the "
                                       "criterion's share); pass them or kd_weight=1")
        parts["ce"] = (criterion or F.cross_entropy)(student_logits, targets)
        loss = loss + (1 - kd_weight) * parts["ce"]
    if features is not None:
        parts["feature"] = features.loss()
        loss = loss + feature_weight * parts["feature"]
    parts["loss"] = loss
    return parts


def finetune(student: nn.Module, teacher: nn.Module, loader: Loader, *, epochs: int = 1,
             optimizer: torch.optim.Optimizer | None = None,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
             kd_weight: float = 0.5, temperature: float = 4.0, criterion: Criterion | None = None,
             feature_pairs: Mapping[str, str] | None = None,
             feature_loss: str | FeatureLoss = "mse", feature_weight: float = 1.0,
             progress: bool = False) -> list[dict[str, float]]:
    """Fine-tune ``student`` from ``teacher``'s outputs (see :func:`distill_loss`).

    The teacher runs in eval mode without gradients (its BatchNorm statistics stay as they
    are and dropout is off: the teacher's own predictions); every module's training flag
    of both models is put back at the end. The teacher's weights are never changed.

    Args:
        student: the model to train, e.g. a frozen subnet (``fxrazor.freeze(sn)``).
        teacher: the model to learn from, e.g. the original unpruned model.
        loader: ``(inputs, targets)`` batches, iterated once per epoch, or
            ``epoch -> batches`` (a seeded shuffle per epoch).
        epochs: passes over ``loader``.
        optimizer: over the student's parameters (default SGD, lr 0.01, momentum 0.9);
            the feature connectors are added to it as a new parameter group.
        scheduler: stepped after every optimizer step (a schedule over all batches).
        kd_weight, temperature, criterion: as :func:`distill_loss` takes them.
        feature_pairs: ``{student path: teacher path}`` for a :class:`FeatureDistiller`
            (paths: :func:`~fxrazor.distill_features.feature_paths`), with ``feature_loss``
            and ``feature_weight``.
        progress: a tqdm bar over each epoch's batches (when tqdm is installed).

    Returns:
        One dict per epoch: the mean ``loss``, ``kd`` (and ``ce``, ``feature``) per batch.

    Example:
        >>> torch.manual_seed(0) and None
        >>> teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(4)]
        >>> history = finetune(student, teacher, batches, epochs=5, kd_weight=1.0,
        ...                    optimizer=torch.optim.SGD(student.parameters(), lr=0.5))
        >>> history[-1]["kd"] < history[0]["kd"]
        True
    """
    _check(student, teacher, epochs, kd_weight, temperature)
    params = [p for p in student.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    _check_optimizer(optimizer, student, teacher)
    features = None
    history: list[dict[str, float]] = []
    with _modes_restored(student, teacher):
        try:
            if feature_pairs is not None:
                features = FeatureDistiller(student, teacher, feature_pairs, loss=feature_loss)
                features.prepare(_first_inputs(loader))
                if list(features.parameters()):
                    optimizer.add_param_group({"params": list(features.parameters())})
            student.train()
            teacher.eval()
            step = functools.partial(distill_loss, kd_weight=kd_weight,
                                     temperature=temperature, criterion=criterion,
                                     features=features, feature_weight=feature_weight)
            for epoch in range(epochs):
                batches = _bar(_batches(loader, epoch), progress, f"epoch {epoch + 1}")
                history.append(_epoch(student, teacher, batches, step, optimizer, scheduler))
                logger.info("finetune epoch %d: %s", epoch + 1, history[-1])
                if not history[-1]:
                    raise InvalidArgumentError(
                        f"the loader gave no batch in epoch {epoch + 1}; pass a list, a "
                        f"DataLoader or an `epoch -> batches` callable (a generator runs once)")
                if not math.isfinite(history[-1]["loss"]):
                    logger.warning("finetune: the loss is %s; lower the learning rate",
                                   history[-1]["loss"])
        finally:
            if features is not None:
                features.remove()
    return history


def _epoch(student: nn.Module, teacher: nn.Module, batches: Iterable[Any],
           step: Callable[..., dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer,
           scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> dict[str, float]:
    """One pass over ``batches``; the mean of each loss part ({} without a batch)."""
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        inputs, targets = _split(batch)
        with torch.no_grad():
            teacher_logits = call_model(teacher, inputs)
        parts = step(call_model(student, inputs), teacher_logits, targets)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach())
        count += 1
    return {k: v / count for k, v in sums.items()}


def _check(student: nn.Module, teacher: nn.Module, epochs: int, kd_weight: float,
           temperature: float) -> None:
    if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
        raise InvalidArgumentError("student and teacher are nn.Modules")
    if student is teacher:
        raise InvalidArgumentError("student and teacher are the same module; fine-tune a "
                                   "copy (e.g. fxrazor.freeze(sn)) from the original")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"epochs is a positive int, got {epochs!r}")
    if not 0 <= kd_weight <= 1:
        raise InvalidArgumentError(f"kd_weight is in [0, 1], got {kd_weight!r}")
    if not temperature > 0:
        raise InvalidArgumentError(f"temperature must be > 0, got {temperature!r}")
    if not any(p.requires_grad for p in student.parameters()):
        raise InvalidArgumentError("the student has no parameter that requires grad")


def _check_optimizer(optimizer: torch.optim.Optimizer, student: nn.Module,
                     teacher: nn.Module) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidArgumentError(f"optimizer is a torch.optim.Optimizer, got "
                                   f"{type(optimizer).__name__}")
    given = {id(p) for g in optimizer.param_groups for p in g["params"]}
    # a frozen subnet may share storage with its source; training it would move the teacher
    shared = {p.data_ptr() for p in student.parameters() if p.numel()}
    for name, p in teacher.named_parameters():
        if id(p) in given or (p.numel() and p.data_ptr() in shared):
            raise InvalidArgumentError(
                f"the teacher's parameter {name!r} is in the optimizer or shared with the "
                f"student; optimize the student's parameters only, and fine-tune a copy")
    if not given & {id(p) for p in student.parameters()}:
        raise InvalidArgumentError("the optimizer holds none of the student's parameters")


@contextmanager
def _modes_restored(*models: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for model in models for m in model.modules()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _batches(loader: Loader, epoch: int) -> Iterable[Any]:
    return loader(epoch) if callable(loader) else loader


def _first_inputs(loader: Loader) -> Any:
    for batch in _batches(loader, 0):
        return _split(batch)[0]
    raise InvalidArgumentError("the loader gave no batch")


def _split(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise InvalidArgumentError(f"a batch is (inputs, targets), got a {type(batch).__name__}"
                                   + (f" of {len(batch)}" if isinstance(batch, (tuple, list))
                                      else ""))
    return batch[0], batch[1]


def _bar(items: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        logger.warning("progress=True needs tqdm (pip install tqdm); no bar")
        return items
    return tqdm(items, desc=desc, leave=False)
