"""The `Profile` record: a measured (or loaded) baseline of a model on a target, the data the rule
engine decides from.

`Profile.to_json()` is schema-versioned; `Profile.from_json()` reads it back, e.g. a profile
measured earlier on the real device and passed as `--from-profile`. Measuring one is
`advisor.measure.profile.profile_model`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import TargetError
from advisor.measure.layers import Hotspots

__all__ = ["Profile", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
KIND = "advisor-profile"
_REQUIRED_KEYS = ("schema_version", "latency_ms", "runtimes", "target", "host")


@dataclass
class Profile:
    """A measured (or loaded) baseline. `runtimes` holds one JSON-ready entry per runtime."""

    model: dict[str, Any]
    target: dict[str, Any]
    host: dict[str, Any]
    batch_size: int
    primary_runtime: str
    runtimes: dict[str, dict[str, Any]]
    peak_memory_mb: float | None
    flops: int | None
    params: int | None
    size_mb: float | None
    hotspots: Hotspots | None = None
    flops_by_module: dict[str, int] = field(default_factory=dict)
    params_by_module: dict[str, int] = field(default_factory=dict)
    flops_convention: str = ""
    size_source: str = ""
    memory: dict[str, Any] = field(default_factory=dict)
    measurement: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    # ---- views ---------------------------------------------------------------------------
    @property
    def latency_ms(self) -> dict[str, Any]:
        """p50/p90/mean/cv of the primary runtime, plus the same per runtime under its name."""
        main = self.runtimes.get(self.primary_runtime, {})
        out: dict[str, Any] = {"runtime": self.primary_runtime,
                               **{k: main.get(k) for k in ("p50", "p90", "mean", "std", "cv",
                                                           "min")}}
        for name, r in self.runtimes.items():
            if r.get("status") == "ok":
                out[name] = {k: r.get(k) for k in ("p50", "p90", "mean", "cv")}
        return out

    @property
    def p50(self) -> float:
        return float(self.runtimes[self.primary_runtime]["p50"])

    @property
    def emulated(self) -> bool:
        return bool(self.target.get("emulated"))

    def ok_runtimes(self) -> list[str]:
        return [n for n, r in self.runtimes.items() if r.get("status") == "ok"]

    # ---- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version, "kind": KIND,
            "tool": {"name": "advisor", "version": _advisor_version()}, "created": self.created,
            "model": self.model, "target": self.target, "host": self.host,
            "batch_size": self.batch_size, "runtime": self.primary_runtime,
            "latency_ms": self.latency_ms, "runtimes": self.runtimes,
            "peak_memory_mb": self.peak_memory_mb, "memory": self.memory,
            "flops": self.flops, "flops_convention": self.flops_convention,
            "params": self.params, "size_mb": self.size_mb, "size_source": self.size_source,
            "hotspots": self.hotspots.to_json() if self.hotspots else None,
            "flops_by_module": self.flops_by_module, "params_by_module": self.params_by_module,
            "measurement": self.measurement, "warnings": self.warnings,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = "profile") -> "Profile":
        """Read `to_json()` output back; a malformed or newer file is a TargetError."""
        if not isinstance(d, dict):
            raise TargetError(f"{source}: not a profile (expected a JSON object)")
        missing = [k for k in _REQUIRED_KEYS if k not in d]
        if missing:
            raise TargetError(f"{source}: not an advisor profile (missing {', '.join(missing)})",
                              "write one with `advisor profile MODEL --target T --json FILE`")
        version = d["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise TargetError(f"{source}: profile schema version {version!r} is not supported "
                              f"(this advisor reads up to {SCHEMA_VERSION})",
                              "re-measure with this version of advisor")
        runtimes = d["runtimes"]
        primary = d.get("runtime") or (d["latency_ms"] or {}).get("runtime")
        if not isinstance(runtimes, dict) or primary not in runtimes or \
                not isinstance(runtimes[primary].get("p50"), (int, float)):
            raise TargetError(f"{source}: the profile has no latency of its primary runtime "
                              f"({primary!r})")
        try:
            return cls(
                model=dict(d.get("model") or {}), target=dict(d["target"]), host=dict(d["host"]),
                batch_size=int(d.get("batch_size", 1)), primary_runtime=primary,
                runtimes={k: dict(v) for k, v in runtimes.items()},
                peak_memory_mb=_num(d.get("peak_memory_mb")), flops=_int(d.get("flops")),
                params=_int(d.get("params")), size_mb=_num(d.get("size_mb")),
                hotspots=Hotspots.from_json(d["hotspots"]) if d.get("hotspots") else None,
                flops_by_module=dict(d.get("flops_by_module") or {}),
                params_by_module=dict(d.get("params_by_module") or {}),
                flops_convention=d.get("flops_convention", ""),
                size_source=d.get("size_source", ""), memory=dict(d.get("memory") or {}),
                measurement=dict(d.get("measurement") or {}),
                warnings=list(d.get("warnings") or []), created=d.get("created", ""),
                schema_version=version)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise TargetError(f"{source}: malformed profile ({type(e).__name__}: {e})") from e

    @classmethod
    def from_json_file(cls, path: str | Path) -> "Profile":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise TargetError(f"profile {path} does not exist") from e
        except (OSError, ValueError) as e:
            raise TargetError(f"profile {path}: cannot read it as JSON ({e})") from e
        return cls.from_json(data, source=str(path))


def _advisor_version() -> str | None:
    try:
        from advisor import __version__
        return __version__
    except ImportError:  # advisor imported as a namespace package (a stale editable install)
        from importlib import metadata
        try:
            return metadata.version("advisor")
        except metadata.PackageNotFoundError:
            return None


def _num(x) -> float | None:
    return None if x is None else float(x)


def _int(x) -> int | None:
    return None if x is None else int(x)
