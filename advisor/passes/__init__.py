"""Compression techniques, one module each, registered by name (see `base`)."""
from advisor.passes.base import (PASSES, OnnxArtifact, PassContext, PassResult, PassSpec,
                                 RetrainBudget, get_pass, load_builtin_passes, register_pass)
from advisor.passes.config import config_from_dict, config_to_dict

__all__ = ["PASSES", "OnnxArtifact", "PassContext", "PassResult", "PassSpec", "RetrainBudget",
           "config_from_dict", "config_to_dict", "get_pass", "load_builtin_passes",
           "register_pass"]
