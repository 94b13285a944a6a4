"""advisor: deployment-target aware optimization advisor for PyTorch vision models.

`from advisor import analyze, apply_plan, profile` — imported lazily so that `import advisor`
and `advisor --help` stay fast and touch no GPU.
"""
__version__ = "0.1.0"
__all__ = ["analyze", "apply_plan", "profile", "__version__"]


def __getattr__(name):
    if name in ("analyze", "apply_plan", "profile"):
        from advisor import api
        return getattr(api, name)
    raise AttributeError(f"module 'advisor' has no attribute {name!r}")
