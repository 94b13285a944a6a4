"""What `advisor analyze` hands the user from its trials: the chosen artefact itself (`--apply`),
its held-out accuracy and hot spots, and the staged report and plan files."""
from __future__ import annotations

from pathlib import Path

from advisor.errors import PlanError

__all__ = ["ship_chosen", "final_paths", "artifact_accuracy", "artifact_hotspots_rows",
           "write_outputs"]


def ship_chosen(chosen, out_dir: Path) -> dict:
    """`--apply`: the chosen trial's artefact itself — the file that was timed and evaluated —
    copied (with its gzip copy for sparse models), its sha256 checked against the measured one."""
    import shutil

    from advisor.fileio import sha256_file

    src = Path(chosen.artifact)
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"model{''.join(src.suffixes[-1:])}"
    shutil.copyfile(src, dst)
    sha = sha256_file(dst)
    if sha != chosen.outcome.artifact_sha256:
        raise PlanError(f"the chosen artefact {src} changed after it was measured",
                        "run the analysis again")
    files = {dst.suffix.lstrip("."): str(dst)}
    gz = src.with_name(src.name + ".gz")
    if chosen.outcome.size_stored_as == "gzip" and gz.is_file():
        shutil.copyfile(gz, dst.with_name(dst.name + ".gz"))
        files[dst.suffix.lstrip(".") + "_gz"] = str(dst.with_name(dst.name + ".gz"))
    m = chosen.measured
    return {"out_dir": str(out_dir), "files": files, "sha256": sha,
            "source": f"the measured artefact of {chosen.id} ({chosen.name})",
            "after": {"runtime": m["runtime"], "p50_ms": m["latency_ms"]["p50"],
                      "size_mb": m["size_mb"], "accuracy": m.get("accuracy")},
            "steps": [{"pass": s["pass"], "seconds": s.get("seconds")} for s in chosen.steps]}


def final_paths(value, run):
    """`value` with every staged path string replaced by where it lives after the commit."""
    if isinstance(value, dict):
        return {k: final_paths(v, run) for k, v in value.items()}
    if isinstance(value, list):
        return [final_paths(v, run) for v in value]
    if isinstance(value, str) and value.startswith(str(run.staging)):
        return str(run.final(value))
    return value


def artifact_accuracy(rec, loader, target=None) -> float | None:
    from advisor.measure.accuracy import accuracy as acc
    from advisor.trial import _predictor

    if rec.artifact is None:
        return None
    return acc(_predictor(Path(rec.artifact), rec.runtime, target), loader)


def artifact_hotspots_rows(rec, input_shape, tgt, reference: str | None = None) -> list[dict]:
    """Per-layer times of the chosen artefact on its deploy runtime, named by the module each
    node came from — the same names as the baseline's (for the before/after tables)."""
    from advisor.measure.layers import artifact_hotspots
    from advisor.report.build import hot_row

    try:
        rt = tgt.runtime(rec.runtime)
        hs = artifact_hotspots(rec.artifact, rec.runtime, input_shape, threads=tgt.threads,
                               **({"provider": rt.provider} if rt.provider else {}),
                               reference=reference, target=tgt)
        return [hot_row(r) for r in hs.to_json()["layers"]]
    except Exception:  # hot spots are an illustration; their failure must not sink the analysis
        return []


def write_outputs(result, out: Path, records, closest, loaded) -> dict[str, Path]:
    from advisor.fileio import write_json_atomic
    from advisor.report import write_reports

    out.mkdir(parents=True, exist_ok=True)
    files = dict(write_reports(result.report, out))
    for r in records:  # every plan tried is kept: nothing measured is lost
        write_json_atomic(out / "plans" / f"{r.id}.json", r.plan)
    if result.chosen_plan is not None:
        files["plan"] = write_json_atomic(out / "plan.json", result.chosen_plan.to_json())
    elif closest:
        files["closest_plan"] = write_json_atomic(out / "plan-closest.json", closest[0].plan)
    return files


# ---- apply -----------------------------------------------------------------------------------
