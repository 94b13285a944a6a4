"""The trial cache: finished trials kept by content, so that a repeated analysis reuses them and
an interrupted one continues where it stopped (`--resume`).

A trial's key is the sha256 of everything its result depends on (`analysis_key` + the plan):
- the model: its file's sha256 (and ONNX file's), or its weights' when it lives in memory;
- the data: each file's or folder's sha256 as plan.json records it, the preprocessing, the seed;
- the target: its profile (runtimes, threads, precisions, limits) and the machine that measures
  it — this host's CPU model, ISA flags and cores, or the device's fingerprint — so figures
  measured on one target are never reused for another;
- the runtimes' versions (torch, onnxruntime, onnx, torch-pruning), advisor's version and this
  cache's format version; the measurement settings;
- the plan's steps and configs (not its creation time).
Not in the key: the training time a trial was allowed. A time budget gives each run a slightly
different allowance, and a resumed run should reuse what was trained, not train again.

Layout under the cache directory (default `$ADVISOR_CACHE_DIR`, else
`$XDG_CACHE_HOME/advisor/trials`, else `~/.cache/advisor/trials`): `entries/<key>/result.json`
plus the files it names (the deployable artefact, the fp32 prefix a sibling plan starts from),
each with its sha256, checked on every reuse: a damaged entry is dropped, never used.
`journal/<analysis key>.json` says whether the last analysis of these inputs finished
("done") or not ("running": Ctrl-C, a crash), which is what `--resume` continues.
Entries are written to a temporary directory and renamed into place: a reader sees a whole entry
or none. The cache keeps to `$ADVISOR_CACHE_MB` (default 4096 MB), dropping the entries used
least recently. Only successful trials are kept: a failure may be the host's (a timeout, a dropped
device) and is tried again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
DEFAULT_CAP_MB = 4096  # $ADVISOR_CACHE_MB overrides; the entries used least recently go first
_VERSIONED = ("torch", "onnxruntime", "onnx", "torch-pruning", "onnxscript")


def default_dir() -> Path:
    if os.environ.get("ADVISOR_CACHE_DIR"):
        return Path(os.environ["ADVISOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "advisor" / "trials"


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str,
                                     separators=(",", ":")).encode()).hexdigest()


def model_fingerprint(loaded) -> dict[str, Any] | None:
    """What identifies the model's weights and graph; None when nothing does."""
    from advisor.fileio import sha256_file
    from advisor.model_common import arch_record, weights_digest

    out: dict[str, Any] = {"format": loaded.format, "input_shape": list(loaded.input_shape),
                           "arch": arch_record(loaded)}
    for key, path in (("file", loaded.path), ("onnx", loaded.onnx_path)):
        if path and Path(path).is_file():
            out[key] = sha256_file(path)
    if "file" not in out and "onnx" not in out:
        if loaded.module is None:
            return None
        out["weights"] = digest([type(loaded.module).__qualname__,
                                 weights_digest(loaded.module)])
    return out


def target_fingerprint(target) -> dict[str, Any]:
    """The target's profile and the machine that measures it."""
    from advisor.measure.host import detect_host

    profile = {k: v for k, v in target.to_json().items()
               if k not in ("description", "notes", "source_path")}
    if target.link is not None:
        from advisor.device.remote import device_facts
        fp = device_facts(target.link)["fingerprint"]
    else:
        fp = detect_host()
    machine = {k: fp.get(k) for k in ("cpu_model", "arch", "isa", "cores_available",
                                      "cpu_quota", "onnxruntime", "gpu")}
    return {"profile": profile, "machine": machine}


def versions() -> dict[str, str | None]:
    import advisor

    out: dict[str, str | None] = {"advisor": advisor.__version__, "cache": str(CACHE_VERSION)}
    for dist in _VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def analysis_key(loaded, data_specs: dict, target, measure: dict, seed: int,
                 retrain: str) -> str | None:
    """The key of everything but the plan; None when the inputs cannot be identified (a model
    or data given as an in-memory object without a file)."""
    model = model_fingerprint(loaded)
    if model is None:
        return None
    roles = [r for r in ("val", "test", "train") if data_specs.get(r)]
    hashes = data_specs.get("sha256") or {}
    if any(r not in hashes for r in roles):
        return None  # a loader or hook: its samples cannot be hashed here
    data = {"sha256": {r: hashes[r] for r in roles},
            "preprocess": data_specs.get("preprocess")}
    return digest({"model": model, "data": data, "target": target_fingerprint(target),
                   "versions": versions(), "measure": measure, "seed": seed,
                   "retrain": retrain})


def trial_key(analysis: str, plan: dict) -> str:
    return digest({"analysis": analysis, "plan": {k: v for k, v in plan.items()
                                                  if k not in ("created", "expected")}})


class TrialCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.entries = self.root / "entries"
        self.journal_dir = self.root / "journal"
        self.reused = 0
        self.stored = 0
        # trials may finish side by side (`run_search` lanes): counts and eviction one at a time
        self._lock = threading.Lock()

    # ---- the journal: did the last analysis of these inputs finish? -------------------------

    def journal(self, analysis: str) -> dict | None:
        try:
            return json.loads((self.journal_dir / f"{analysis}.json").read_text())
        except (OSError, ValueError):
            return None

    def mark(self, analysis: str, status: str) -> None:
        from advisor.fileio import write_json_atomic

        self.journal_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.journal_dir / f"{analysis}.json",
                          {"status": status, "time": time.strftime("%Y-%m-%d %H:%M:%S")})

    # ---- entries ---------------------------------------------------------------------------

    def get(self, key: str) -> dict | None:
        """The cached result of `key` with its files' paths inside the entry, or None."""
        entry = self.entries / key
        try:
            record = json.loads((entry / "result.json").read_text())
        except (OSError, ValueError):
            return None
        from advisor.fileio import sha256_file

        for name, sha in record.get("files", {}).items():
            path = entry / "files" / name
            if not path.is_file() or sha256_file(path) != sha:
                shutil.rmtree(entry, ignore_errors=True)  # damaged: never used
                return None
        result = _with_paths(record["result"], entry / "files")
        result["cached"] = {"key": key, "stored": record.get("stored")}
        os.utime(entry)
        with self._lock:
            self.reused += 1
        return result

    def put(self, key: str, result: dict) -> bool:
        """Keep a successful trial's result and the files it names. Best effort: a cache that
        cannot be written costs the reuse, not the analysis."""
        from advisor.fileio import sha256_file

        if result.get("status") != "ok" or (self.entries / key).exists():
            return False
        tmp = self.entries / f".{key}.{os.getpid()}.tmp"
        try:
            (tmp / "files").mkdir(parents=True, exist_ok=True)
            files: dict[str, str] = {}
            stored = _copy_files(result, tmp / "files", files)
            record = {"result": stored, "files": {n: sha256_file(tmp / "files" / n)
                                                  for n in files.values()},
                      "stored": time.strftime("%Y-%m-%d %H:%M:%S")}
            (tmp / "result.json").write_text(json.dumps(record, default=_no_json))
            with self._lock:
                os.replace(tmp, self.entries / key)
                self.stored += 1
                self._evict(keep=key)
            return True
        except (OSError, TypeError, ValueError):
            shutil.rmtree(tmp, ignore_errors=True)
            return False


    def _evict(self, keep: str) -> None:
        cap = float(os.environ.get("ADVISOR_CACHE_MB") or DEFAULT_CAP_MB) * 2 ** 20
        entries = sorted((p for p in self.entries.iterdir() if not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime)
        sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in entries}
        total = sum(sizes.values())
        for p in entries:
            if total <= cap:
                break
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)
                total -= sizes[p]


# paths a trial's result names: the artefact and the prefix a sibling plan starts from
_PATH_FIELDS = (("artifact",), ("prefix_onnx", "path"))


def _holder(result: dict, field: tuple[str, ...]) -> dict | None:
    """The dict in `result` that holds `field`'s last key, if there is one."""
    holder = result
    for k in field[:-1]:
        holder = holder.get(k) if isinstance(holder, dict) else None
    return holder if isinstance(holder, dict) else None


def _copy_files(result: dict, into: Path, names: dict[str, str]) -> dict:
    out = json.loads(json.dumps({k: v for k, v in result.items() if k != "torch_model"},
                                default=_no_json))
    for field in _PATH_FIELDS:
        holder = _holder(out, field)
        if holder is None or not holder.get(field[-1]):
            continue
        src = Path(holder[field[-1]])
        if str(src) not in names:
            names[str(src)] = f"{len(names)}-{src.name}"
            shutil.copyfile(src, into / names[str(src)])
        holder[field[-1]] = {"cached_file": names[str(src)]}
    return out


def _with_paths(result: dict, files: Path) -> dict:
    out = json.loads(json.dumps(result))
    for field in _PATH_FIELDS:
        holder = _holder(out, field)
        if holder is not None and isinstance(holder.get(field[-1]), dict):
            holder[field[-1]] = str(files / holder[field[-1]]["cached_file"])
    return out


def _no_json(o: Any):
    """numpy scalars and arrays (a trial's figures may be numpy) as plain JSON values."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON")


def open_for_analysis(cache, resume: bool, loaded, data_specs: dict, target, measure: dict,
                      seed: int, retrain: str, warnings: list[str]
                      ) -> tuple[TrialCache | None, str | None]:
    """(cache, analysis key) for one `analyze`: `cache` False = off, None = the default
    directory, else a directory. `--resume` needs an unfinished analysis of the same inputs."""
    from advisor.errors import CacheError

    if cache is False:
        if resume:
            raise CacheError("--resume needs the trial cache", "drop --no-cache")
        return None, None
    key = analysis_key(loaded, data_specs, target, measure, seed, retrain)
    if key is None:
        if resume:
            raise CacheError("--resume: these inputs cannot be identified (a model or data "
                             "given as an object, not a file)")
        warnings.append("no trial cache: the model or data is an in-memory object without a "
                        "file, so its trials cannot be identified for reuse")
        return None, None
    store = TrialCache(cache if cache is not None else default_dir())
    if resume:
        j = store.journal(key)
        if not j or j.get("status") != "running":
            raise CacheError(f"--resume: the trial cache ({store.root}) holds no interrupted "
                             "analysis of these inputs" + (" (the last one finished)" if j
                                                           else ""),
                             "the model, data, target, settings and advisor version must be "
                             "those of the interrupted run; without --resume a rerun reuses "
                             "finished trials anyway")
    return store, key
