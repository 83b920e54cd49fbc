"""Knowledge distillation: the logit loss, feature pairs, connectors and fine-tuning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxrazor
from fxrazor.distill import FeatureDistiller, distill_loss, finetune, kd_loss
from fxrazor.distill_features import ModuleOutputsRecorder, feature_paths
from fxrazor.errors import InvalidArgumentError
from fxrazor.pruning import prune


def cnn(width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()),
        nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width),
                      nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 5))


def pruned(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    sn = fxrazor.convert(model, x, unit="l1")
    prune(sn, 0.5)
    return fxrazor.freeze(sn)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_is_the_scaled_kl_divergence(temperature: float) -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    expected = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1),
                        reduction="batchmean") * temperature ** 2
    torch.testing.assert_close(kd_loss(s, t, temperature), expected)


def test_kd_loss_does_not_train_the_teacher() -> None:
    s, t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t, 2.0).backward()
    assert s.grad is not None and t.grad is None


def test_recorder_captures_the_named_modules() -> None:
    torch.manual_seed(0)
    net = cnn()
    x = torch.randn(2, 1, 6, 6)
    with ModuleOutputsRecorder(net, ["0.2", "1"]) as rec:
        net(x)
        torch.testing.assert_close(rec.data["0.2"], net[0](x))
        torch.testing.assert_close(rec.data["1"], net[1](net[0](x)))
    assert not net[0][2]._forward_hooks  # removed at the end of the block


def test_feature_loss_is_a_hand_computed_mse() -> None:
    torch.manual_seed(0)
    teacher, student = cnn(), cnn()
    x = torch.randn(4, 1, 6, 6)
    with FeatureDistiller(student, teacher, {"0.2": "0.2", "1.2": "1.2"},
                          weights={"1.2": 0.5}) as fd:
        student(x), teacher(x)
        loss = fd.loss()
    assert len(fd.connectors) == 0  # equal widths: no connector
    expected = (F.mse_loss(student[0](x), teacher[0](x))
                + 0.5 * F.mse_loss(student[1](student[0](x)), teacher[1](teacher[0](x))))
    torch.testing.assert_close(loss, expected)


def test_connectors_only_where_channels_differ() -> None:
    torch.manual_seed(0)
    teacher = cnn()
    x = torch.randn(2, 1, 6, 6)
    student = pruned(teacher, x)
    assert "0.2" in feature_paths(student) and "0" not in feature_paths(student)
    pairs = {"0.2": "0.2", "1.2": "1.2", "3": "3", "4": "4"}
    with FeatureDistiller(student, teacher, pairs) as fd:
        fd.prepare(x)
        assert sorted(fd.connectors) == ["0/2", "1/2", "3"]  # logits ("4") are equal
        assert isinstance(fd.connectors["0/2"], nn.Conv2d)
        assert isinstance(fd.connectors["3"], nn.Linear)
        assert fd.connectors["1/2"].in_channels == student.get_submodule("1.0").out_channels
    with FeatureDistiller(student, teacher, {"0.2": "0.2"}) as fd:
        student(x), teacher(x)
        loss = fd.loss()  # the connector is built at the first loss
        s = student.get_submodule("0.2")(student.get_submodule("0.1")(
            student.get_submodule("0.0")(x)))
        torch.testing.assert_close(loss, F.mse_loss(fd.connectors["0/2"](s), teacher[0](x)))


def test_finetune_reduces_the_kd_loss_and_leaves_the_teacher_alone() -> None:
    torch.manual_seed(0)
    teacher = cnn().train()
    teacher[0][1].eval()  # a mixed flag must come back as it was
    x = torch.randn(64, 1, 6, 6)
    student = pruned(teacher, x[:2])
    batches = [(x[i:i + 16], torch.randint(0, 5, (16,))) for i in range(0, 64, 16)]
    before = copy.deepcopy(teacher.state_dict())
    modes = [m.training for m in teacher.modules()]
    history = finetune(student, teacher, batches, epochs=8, kd_weight=1.0, temperature=2.0,
                       optimizer=torch.optim.Adam(student.parameters(), lr=1e-2),
                       feature_pairs={"1.2": "1.2"})
    assert history[-1]["kd"] < 0.5 * history[0]["kd"]
    assert set(history[0]) == {"kd", "feature", "loss"}
    for key, value in teacher.state_dict().items():  # BN statistics included
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert [m.training for m in teacher.modules()] == modes
    assert student.training and not student.get_submodule("1.2")._forward_hooks


def test_distill_loss_mixes_criterion_and_kd() -> None:
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    parts = distill_loss(s, t, y, kd_weight=0.3, temperature=2.0)
    torch.testing.assert_close(parts["loss"], 0.7 * F.cross_entropy(s, y) + 0.3 * kd_loss(s, t, 2))
    assert "ce" not in distill_loss(s, t, kd_weight=1.0)


@pytest.mark.parametrize("pairs, match", [
    ({"nope": "0"}, "'nope' is not a submodule path"),
    ({"0": "0"}, "never calls"),  # a GraphModule's container: its graph calls the leaves
    ({}, "non-empty"),
])
def test_bad_pairs_name_what_to_do(pairs: dict[str, str], match: str) -> None:
    teacher = cnn()
    student = pruned(teacher, torch.randn(2, 1, 6, 6))
    with pytest.raises(InvalidArgumentError, match=match):
        FeatureDistiller(student, teacher, pairs)
    assert not any(m._forward_hooks for m in student.modules())  # no hook left behind


def test_unmappable_shapes_are_refused() -> None:
    teacher, student = cnn(), cnn()
    x = torch.randn(2, 1, 6, 6)
    with FeatureDistiller(student, teacher, {"0.2": "2"}) as fd:  # (N,8,6,6) vs (N,16,1,1)
        with pytest.raises(InvalidArgumentError, match="connectors="):
            fd.prepare(x)


@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs"),
    ({"kd_weight": 1.5}, "kd_weight"),
    ({"temperature": 0.0}, "temperature"),
    ({"same": True}, "same module"),
    ({"teacher_in_optimizer": True}, "teacher's parameter"),
    ({"generator": True, "epochs": 2}, "no batch in epoch 2"),
    ({"bad_batch": True}, r"\(inputs, targets\)"),
])
def test_finetune_errors(kwargs: dict, match: str) -> None:
    teacher, student = nn.Linear(4, 3), nn.Linear(4, 3)
    batches: object = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    optimizer = None
    if kwargs.pop("same", False):
        student = teacher
    if kwargs.pop("teacher_in_optimizer", False):
        optimizer = torch.optim.SGD([*student.parameters(), *teacher.parameters()], lr=0.1)
    if kwargs.pop("generator", False):
        batches = (b for b in [(torch.randn(2, 4), torch.tensor([0, 1]))])
    if kwargs.pop("bad_batch", False):
        batches = [torch.randn(2, 4)]
    with pytest.raises(InvalidArgumentError, match=match):
        finetune(student, teacher, batches, optimizer=optimizer, **kwargs)


def test_finetune_refuses_mismatched_logits() -> None:
    with pytest.raises(InvalidArgumentError, match="differ in shape"):
        finetune(nn.Linear(4, 3), nn.Linear(4, 5), [(torch.randn(2, 4), torch.tensor([0, 1]))])


def test_finetune_steps_the_scheduler_per_batch() -> None:
    student = nn.Linear(4, 3)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    batches = [(torch.randn(2, 4), torch.tensor([0, 1]))] * 3
    history = finetune(student, nn.Linear(4, 3), lambda epoch: iter(batches), epochs=2,
                       optimizer=opt, scheduler=sched)
    assert len(history) == 2 and sched.last_epoch == 6
