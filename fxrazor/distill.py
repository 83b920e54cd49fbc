"""Knowledge distillation: a student learns the teacher's softened outputs.

``kd_loss`` is Hinton et al.'s logit loss, ``KL(softmax(t / T) || softmax(s / T)) * T**2``
averaged over the batch (the ``T**2`` keeps gradient sizes comparable across
temperatures). The algorithms use it for in-place distillation (the largest subnet
teaches the others); on its own it fine-tunes a pruned model from the original.

Example:
    >>> import torch
    >>> t = torch.tensor([[2.0, 0.0]])
    >>> float(kd_loss(t, t))
    0.0
    >>> round(float(kd_loss(torch.zeros(1, 2), t, temperature=1.0)), 4)  # 0.881 ln 1.762 + 0.119 ln 0.238
    0.3278
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fxrazor.errors import InvalidArgumentError

__all__ = ["kd_loss"]


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
