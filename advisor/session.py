"""What every entry point (profile, analyze, apply) resolves first: the model and the target,
with the default measurement settings."""
from __future__ import annotations

import torch

from advisor.errors import DataError, TargetError

__all__ = ["DEFAULT_MEASURE", "load_model_arg", "resolve_target"]

DEFAULT_MEASURE = {"warmup": 10, "repeats": 100, "max_seconds": 6.0}


def load_model_arg(model, arch=None, input_shape=None, trust_pickle=False, arch_kwargs=None):
    from advisor.model_io import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    from advisor.data_checks import check_input_size
    check_input_size(input_shape)  # an absurd --input-shape fails before anything allocates it
    if isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise DataError("an nn.Module needs input_shape=(1, C, H, W)")
        shape = tuple(int(x) for x in (input_shape.split(",") if isinstance(input_shape, str)
                                       else input_shape))
        return LoadedModel(path=None, format="module", module=model.eval(), onnx_path=None,
                           input_shape=shape, metadata={}, editable=True)
    return load_model(str(model), arch=arch, input_shape=input_shape, trust_pickle=trust_pickle,
                      arch_kwargs=arch_kwargs)


def resolve_target(target):
    from advisor.targets import Target, load_target, target_available

    t = target if isinstance(target, Target) else load_target(str(target))
    ok, why = target_available(t)
    if not ok:
        raise TargetError(f"target {t.name!r} cannot run on this host: {why}",
                          "measure on the device with `advisor profile --json` and pass "
                          "--from-profile, or choose another --target")
    if t.link is not None:  # a device that cannot be reached fails now, in one line
        from advisor.device.remote import device_facts
        device_facts(t.link)
    return t
