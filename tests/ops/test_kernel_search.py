"""Searchable kernel sizes of dynamic convs (``register_mutable_attr("kernel_size", m)``).

The oracle is a conv built here by hand: the centre k-wide window of the weight, indexed
by hand (not by the library), with padding ``dilation * (k - 1) / 2``. The dynamic conv's
forward and its ``to_static()`` must both equal it; bad choices raise FxRazorErrors that
name the layer and the mutable, at bind time and at forward time.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxrazor.errors import ChoiceTypeError, FxRazorError, InvalidArgumentError
from fxrazor.mutables.mutable_value import OneShotMutableValue
from fxrazor.ops.conv import DYNAMIC_CONVS

CASES = {  # name: (static conv, input shape)
    "plain": (lambda: nn.Conv2d(3, 5, 7, padding=3), (2, 3, 9, 9)),
    "depthwise_stride2": (lambda: nn.Conv2d(6, 6, 7, stride=2, padding=3, groups=6,
                                            bias=False), (2, 6, 11, 11)),
    "grouped": (lambda: nn.Conv2d(4, 6, 5, padding=2, groups=2), (1, 4, 8, 8)),
    "dilated": (lambda: nn.Conv2d(3, 4, 5, padding=4, dilation=2), (1, 3, 12, 12)),
    "reflect": (lambda: nn.Conv2d(3, 4, 7, padding=3, padding_mode="reflect"), (1, 3, 9, 9)),
    "same_string": (lambda: nn.Conv2d(3, 4, 7, padding="same"), (1, 3, 9, 9)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 7, padding=3), (2, 3, 10)),
    "conv3d": (lambda: nn.Conv3d(2, 3, 5, padding=2), (1, 2, 6, 6, 6)),
}


def _hand_conv(conv: nn.Module, k: int) -> nn.Module:
    """The static conv of kernel k that BigNAS means: centre window, padding d*(k-1)/2."""
    n = conv.weight.dim() - 2
    big = conv.kernel_size[0]
    s = (big - k) // 2
    window = (slice(None), slice(None)) + (slice(s, s + k),) * n
    padding = conv.padding if isinstance(conv.padding, str) else \
        tuple(d * (k - 1) // 2 for d in conv.dilation)
    hand = type(conv)(conv.in_channels, conv.out_channels, k, stride=conv.stride,
                      padding=padding, dilation=conv.dilation, groups=conv.groups,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode)
    with torch.no_grad():
        hand.weight.copy_(conv.weight[window])
        if conv.bias is not None:
            hand.bias.copy_(conv.bias)
    return hand


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_crop_equals_hand_made_conv(name: str) -> None:
    torch.manual_seed(0)
    make, shape = CASES[name]
    conv = make()
    x = torch.randn(*shape)
    big = conv.kernel_size[0]
    op = DYNAMIC_CONVS[type(conv)].from_static(conv)
    kernel = OneShotMutableValue(list(range(big % 2 or 2, big + 1, 2)))
    op.register_mutable_attr("kernel_size", kernel, key=f"{name}.kernel_size")
    full_out = conv(x)
    for k in kernel.choices:
        if conv.padding != "same" and k % 2 == 0:
            continue
        kernel.current_choice = k
        hand = _hand_conv(conv, k)
        expected = hand(x)
        assert expected.shape == full_out.shape  # same padding: the output shape is kept
        torch.testing.assert_close(op(x), expected, rtol=1e-5, atol=1e-6)
        static = op.to_static()
        assert type(static) is type(conv)
        assert static.kernel_size == hand.kernel_size and static.padding == hand.padding
        assert not [key for key in static.__dict__ if key.startswith("_fxr")]
        torch.testing.assert_close(static(x), expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(static.weight, hand.weight)


def test_kernel_crop_with_channel_selection() -> None:
    """Pruned depthwise channels and a smaller kernel together: the kept channels' centre
    windows."""
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 6, 7, padding=3, groups=6)
    op = DYNAMIC_CONVS[nn.Conv2d].from_static(conv)
    kernel = OneShotMutableValue([3, 5, 7], default_value=5)
    op.register_mutable_attr("kernel_size", kernel)
    keep = torch.tensor([0, 2, 5])
    op.set_selection("in", keep)
    op.set_selection("out", keep)
    x = torch.randn(1, 3, 8, 8)
    hand = nn.Conv2d(3, 3, 5, padding=2, groups=3)
    with torch.no_grad():
        hand.weight.copy_(conv.weight[[0, 2, 5], :, 1:6, 1:6])
        hand.bias.copy_(conv.bias[[0, 2, 5]])
    torch.testing.assert_close(op(x), hand(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(op.to_static()(x), hand(x), rtol=1e-5, atol=1e-6)


def test_unregistering_gives_the_full_kernel() -> None:
    conv = nn.Conv2d(2, 2, 5, padding=2)
    op = DYNAMIC_CONVS[nn.Conv2d].from_static(conv)
    op.register_mutable_attr("kernel_size", OneShotMutableValue([3], default_value=3))
    assert op.to_static().kernel_size == (3, 3)
    op.register_mutable_attr("kernel_size", None)
    assert op.mutable_attrs == {} and op.to_static().kernel_size == (5, 5)


@pytest.mark.parametrize(("conv", "choice", "words"), [
    (nn.Conv2d(2, 2, 5, padding=2), 7, "lie between 1 and"),
    (nn.Conv2d(2, 2, 7, padding=3), 4, "no centre"),
    (nn.Conv2d(2, 2, 7, padding=1), 3, "not same-padded"),
    (nn.Conv2d(2, 2, 7, padding="valid"), 5, "padding='valid'"),
    (nn.Conv2d(2, 2, 6, padding=(3, 2), dilation=(1, 2)), 4, "not same-padded"),
])
def test_bad_kernel_choice_raises_at_forward_naming_the_layer(conv, choice, words) -> None:
    op = DYNAMIC_CONVS[nn.Conv2d].from_static(conv)
    value = OneShotMutableValue([choice])
    op.register_mutable_attr("kernel_size", value, key="blocks.0.dw.kernel_size")
    with pytest.raises(FxRazorError, match=words) as info:
        op(torch.randn(1, 2, 9, 9))
    assert "blocks.0.dw.kernel_size" in str(info.value) and "OneShotMutableValue" in str(info.value)


def test_kernel_choice_types() -> None:
    op = DYNAMIC_CONVS[nn.Conv2d].from_static(nn.Conv2d(2, 2, (7, 5), padding=(3, 2)))
    value = OneShotMutableValue([(3, 3), (7, 5)], default_value=(3, 3))
    op.register_mutable_attr("kernel_size", value)
    assert op.to_static().kernel_size == (3, 3) and op.to_static().padding == (1, 1)
    op.register_mutable_attr("kernel_size", OneShotMutableValue([2.0]))
    with pytest.raises(ChoiceTypeError, match="an int or 2 ints"):
        op.to_static()
    with pytest.raises(InvalidArgumentError, match="'kernel_size' only"):
        op.register_mutable_attr("stride", OneShotMutableValue([1, 2]))


def test_training_a_small_kernel_updates_only_its_window() -> None:
    """The shared weight: a 3x3 step trains the centre of the 7x7 kernel, nothing else."""
    torch.manual_seed(0)
    op = DYNAMIC_CONVS[nn.Conv2d].from_static(nn.Conv2d(2, 2, 7, padding=3, groups=2))
    op.register_mutable_attr("kernel_size", OneShotMutableValue([3, 7], default_value=3))
    op(torch.randn(1, 2, 6, 6)).square().sum().backward()
    grad = op.weight.grad
    assert bool(grad[:, :, 2:5, 2:5].ne(0).all())
    outside = grad.clone()
    outside[:, :, 2:5, 2:5] = 0
    assert bool(outside.eq(0).all())
