"""Every built-in pass is still registered under its name, from the module that defines it
(moving helpers between modules must not lose one)."""
from __future__ import annotations

from advisor.passes.base import load_builtin_passes

PASSES = {
    "prune_structured": "advisor.passes.structured",
    "prune_unstructured": "advisor.passes.unstructured",
    "prune_unstructured_iterative": "advisor.passes.unstructured",
    "prune_at_init": "advisor.passes.at_init",
    "factorize": "advisor.passes.factorize",
    "int8_static": "advisor.passes.quantize_ort",
    "int8_dynamic": "advisor.passes.quantize_ort",
    "weight_only_int8": "advisor.passes.quantize_ort",
    "torch_dynamic_int8": "advisor.passes.quantize_torch",
    "fp16": "advisor.passes.fp16",
    "bf16": "advisor.passes.fp16",
    "distill": "advisor.passes.distill",
    "distill_student": "advisor.passes.distill",
    "finetune": "advisor.passes.finetune",
}


def test_every_builtin_pass_is_registered_where_it_is_defined():
    passes = load_builtin_passes()
    assert set(PASSES) <= set(passes), f"lost: {sorted(set(PASSES) - set(passes))}"
    for name, module in PASSES.items():
        spec = passes[name]
        assert spec.name == name and spec.apply.__module__ == module
        assert spec.config_cls.__module__ == module  # configs stay next to their pass
