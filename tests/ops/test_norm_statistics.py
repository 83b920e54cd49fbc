"""Dynamic norms in training: running statistics of the kept channels only."""

from __future__ import annotations

import torch
from oracles import assert_close
from small_models import (
    conv_bn_chain,
)

import fxrazor


# ---- batch norm in training mode -------------------------------------------------------------
def test_train_forward_updates_only_kept_bn_statistics() -> None:
    model, x = conv_bn_chain()
    model.train()
    sn = fxrazor.convert(model, x)
    sn.set_choices({"0": 3})
    bn = sn.graph_module.get_submodule("1")
    mean0, var0 = bn.running_mean.clone(), bn.running_var.clone()
    count0 = int(bn.num_batches_tracked)
    sn(x)
    with torch.no_grad():
        h = model[0](x)[:, :3]
    m = model[1].momentum
    expected_mean = (1 - m) * mean0[:3] + m * h.mean(dim=(0, 2, 3))
    expected_var = (1 - m) * var0[:3] + m * h.var(dim=(0, 2, 3), unbiased=True)
    assert_close(bn.running_mean[:3], expected_mean, rtol=1e-5, atol=1e-6)
    assert_close(bn.running_var[:3], expected_var, rtol=1e-5, atol=1e-6)
    assert torch.equal(bn.running_mean[3:], mean0[3:])
    assert torch.equal(bn.running_var[3:], var0[3:])
    assert int(bn.num_batches_tracked) == count0 + 1
    assert torch.equal(model[1].running_mean, torch.zeros(8))  # the original is untouched
