"""The layers `factorize` may replace: every Conv2d/Linear seen in one forward pass at the
model's input shape (with its input/output shapes and call count), and which of them are eligible
(factorizable, not ignored, called exactly once, big enough) with their decompositions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advisor.errors import PassError
from advisor.passes.lowrank.decompose import LayerBasis, decompose, factorizable, layer_flops
from advisor.passes.torch_common import modules_within, resolve_layers

if TYPE_CHECKING:
    from advisor.passes.factorize import FactorizeConfig


@dataclass
class Layer:
    """One Conv2d/Linear of the model as seen in a forward pass at the input shape."""

    name: str
    module: nn.Module
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    calls: int = 0
    basis: LayerBasis | None = None
    ranks: tuple[int, ...] | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def dense_flops(self) -> int:
        return layer_flops(self.module, self.in_shape, self.out_shape)

    def flops(self, ranks: tuple[int, ...]) -> int:
        return layer_flops(self.module, self.in_shape, self.out_shape, ranks)


@torch.no_grad()
def discover(model: nn.Module, shape: tuple[int, ...]) -> list[Layer]:
    """Every Conv2d-like and Linear layer with its input/output shape at `shape` (batch as given)."""
    layers = [Layer(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]

    def hook(layer: Layer):
        def fn(mod, inputs, output):
            layer.calls += 1
            if layer.calls == 1:
                layer.in_shape, layer.out_shape = tuple(inputs[0].shape), tuple(output.shape)
        return fn

    handles = [lay.module.register_forward_hook(hook(lay)) for lay in layers]
    was = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        x = torch.zeros(shape, dtype=param.dtype if param is not None else torch.float32,
                        device=param.device if param is not None else "cpu")
        model(x)
    except Exception as e:
        raise PassError(f"factorize could not run the model at input shape {list(shape)}: {e}",
                        "check the input shape") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return layers


def eligible(model: nn.Module, layers: list[Layer], config: FactorizeConfig) -> list[Layer]:
    """The layers that may be factorized (with their bases); the others get a skip record."""
    ignored = modules_within(model, resolve_layers(model, config.ignore_layers))
    out = []
    for layer in layers:
        ok, why = factorizable(layer.module)
        if ok and layer.name in ignored:
            ok, why = False, "listed in ignore_layers"
        if ok and layer.calls == 0:
            ok, why = False, "not called in the forward pass"
        if ok and layer.calls > 1:
            ok, why = False, f"called {layer.calls} times per forward (shared weights)"
        if ok and layer.dense_flops < config.min_layer_flops:
            ok, why = False, f"{layer.dense_flops} FLOPs < min_layer_flops"
        layer.record = {"name": layer.name, "kind": "skipped", "replaced": False, "reason": why}
        if layer.calls:
            layer.record["flops_before"] = layer.record["flops_after"] = layer.dense_flops
        if ok:
            layer.basis = decompose(layer.module)
            layer.record.update({"kind": layer.basis.kind, "reason": "",
                                 "max_ranks": list(layer.basis.max_ranks)})
            out.append(layer)
    return out
