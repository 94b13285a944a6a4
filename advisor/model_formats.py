"""Which format a model file is, recognised by content (magic bytes, zip member names), not by
its extension: 'pt2', 'torchscript', 'torch_save' or 'onnx'. Anything else is a ModelLoadError
that says what the file looks like (an image, a text file, ...)."""
from __future__ import annotations

import zipfile
from pathlib import Path

from advisor.errors import ModelLoadError

__all__ = ["detect_format"]

_ZIP_MAGIC = b"PK\x03\x04"

_KNOWN_NON_MODELS = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"\x1f\x8b", "a gzip archive"), (b"BM", "a BMP image"),
)

def detect_format(path: Path) -> str:
    """One of 'pt2', 'torchscript', 'torch_save', 'onnx'; raises ModelLoadError otherwise."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch_save"  # torch.save(..., _use_new_zipfile_serialization=False): raw pickle
    if head[:1] == b"\x08" and _is_onnx(path):
        return "onnx"
    raise ModelLoadError(f"{path}: {_describe_unknown(path, head)}, not a model advisor can read",
                         "supported: .pt2 (torch.export), .onnx, TorchScript, a state_dict with "
                         "--arch, or pkg.module:factory")

def _zip_format(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelLoadError(f"{path} is truncated or corrupt (an incomplete zip archive: {e})",
                             "the file was cut short while saving or copying: copy or export "
                             "it again") from e
    rel = [n.split("/", 1)[1] if "/" in n else n for n in names]
    if "archive_format" in rel or any(r.startswith("models/") and r.endswith(".json")
                                      for r in rel) or "serialized_exported_program.json" in rel:
        return "pt2"
    if any(r.startswith("code/") for r in rel) or "constants.pkl" in rel:
        return "torchscript"
    if "data.pkl" in rel:
        return "torch_save"
    raise ModelLoadError(f"{path} is a zip archive but not a PyTorch model (no exported program, "
                         "TorchScript code or torch.save pickle inside)",
                         "pass the .pt2/.onnx/.pt file itself, not an archive holding it")

def _is_onnx(path: Path) -> bool:
    try:
        import onnx
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return len(model.graph.node) > 0

def _describe_unknown(path: Path, head: bytes) -> str:
    for magic, what in _KNOWN_NON_MODELS:
        if head.startswith(magic):
            return f"this is {what}"
    with open(path, "rb") as f:
        sample = f.read(4096)
    try:
        sample.decode("utf-8")
        return "this is a text file"
    except UnicodeDecodeError:
        return "unrecognised binary content"
