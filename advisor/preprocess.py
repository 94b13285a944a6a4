"""How images become model inputs: resize, center crop, scale to [0, 1], normalise.

Vision users train with torchvision's `Resize(256) → CenterCrop(224) → ToTensor → Normalize`;
an evaluation that preprocesses differently measures a different model. `Preprocess` states the
steps once; it is given on the command line (`--preprocess imagenet`, or `--resize N --crop N
--mean a,b,c --std a,b,c`), recorded in the report and in plan.json, and rebuilt from there by
`advisor apply` so a replay calibrates on identically prepared images.

The image steps are written here with Pillow and torch rather than taken from torchvision, which
need not be installed beside the user's torch (and PyPI's build does not load beside a CPU torch).
They follow torchvision's definitions, so the tensors agree with it to float rounding:
- resize (`resize=N`): the shorter side becomes N, the longer `int(N * long / short)`, bilinear;
  Pillow's bilinear filter widens with the scale factor, i.e. it antialiases when shrinking, as
  torchvision's PIL path does;
- center crop (`crop=N`): an N×N window whose top-left corner is `round((H - N) / 2)`,
  `round((W - N) / 2)`; an image smaller than N is zero-padded around first, as torchvision does;
- to tensor: `uint8 / 255` in C×H×W order; then `(x - mean) / std` per channel.

Without `resize`/`crop`, an image is resized straight to the model's input H×W (the behaviour for
data stored at the model's size). `mean`/`std` apply to every data format, tensors included.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from advisor.errors import DataError

__all__ = ["Preprocess", "PRESETS", "preprocess_from_options", "as_preprocess"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """The preprocessing of one run. All fields optional; `name` is the preset it came from."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    name: str | None = None

    def __post_init__(self):
        for field_name in ("resize", "crop"):
            v = getattr(self, field_name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise DataError(f"--{field_name} must be a positive number of pixels, got {v!r}")
        for field_name in ("mean", "std"):
            v = getattr(self, field_name)
            if v is not None and (not v or not all(isinstance(c, (int, float)) and
                                                   np.isfinite(c) for c in v)):
                raise DataError(f"--{field_name} must be finite numbers, one per channel "
                                "(e.g. 0.485,0.456,0.406)", f"got {v!r}")
        if self.std is not None and any(c == 0 for c in self.std):
            raise DataError("--std contains 0", "give the per-channel standard deviations")
        if self.mean is not None and self.std is not None and \
                len(self.mean) not in (1, len(self.std)) and len(self.std) != 1:
            raise DataError(f"--mean has {len(self.mean)} values but --std {len(self.std)}",
                            "give one value per channel for both")

    @property
    def is_identity(self) -> bool:
        return self.resize is None and self.crop is None and self.mean is None and \
            self.std is None

    @property
    def resizes_itself(self) -> bool:
        """True when the steps decide the image size (else images go to the input's H×W)."""
        return self.resize is not None or self.crop is not None

    def to_dict(self) -> dict[str, Any] | None:
        """What plan.json and report.json record (None: no preprocessing beyond [0, 1])."""
        if self.is_identity:
            return None
        return {"name": self.name, "resize": self.resize, "crop": self.crop,
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None}

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "plan") -> "Preprocess":
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise DataError(f"{where}: preprocess is a {type(data).__name__}, not an object")
        unknown = set(data) - {"name", "resize", "crop", "mean", "std"}
        if unknown:
            raise DataError(f"{where}: unknown preprocess field(s) {', '.join(sorted(unknown))}")
        tup = lambda v: tuple(float(c) for c in v) if isinstance(v, (list, tuple)) else v
        return cls(resize=data.get("resize"), crop=data.get("crop"), mean=tup(data.get("mean")),
                   std=tup(data.get("std")), name=data.get("name"))

    def describe(self) -> str:
        """One line for the report, e.g. 'imagenet: resize 256, center crop 224, mean ... std ...'."""
        if self.is_identity:
            return "images scaled to [0, 1], resized to the input size; no normalisation"
        parts = []
        if self.resize is not None:
            parts.append(f"resize shorter side to {self.resize} (bilinear, antialiased)")
        if self.crop is not None:
            parts.append(f"center crop {self.crop}")
        parts.append("scale to [0, 1]")
        if self.mean is not None or self.std is not None:
            parts.append(f"normalise mean {_fmt(self.mean)} std {_fmt(self.std)}")
        return (f"{self.name}: " if self.name else "") + ", ".join(parts)

    # ---- the steps -------------------------------------------------------------------------

    def image_to_tensor(self, img, size_wh: tuple[int, int] | None) -> torch.Tensor:
        """A Pillow image (already in its colour mode) → float32 C×H×W, before normalisation.

        `size_wh`: the model's input (W, H), used when this preprocessing sets no size."""
        from PIL import Image

        bilinear = Image.Resampling.BILINEAR
        if self.resize is not None:
            img = img.resize(_shorter_side_to(img.size, self.resize), resample=bilinear)
        if self.crop is not None:
            img = _center_crop(img, self.crop)
        if not self.resizes_itself and size_wh is not None and img.size != tuple(size_wh):
            img = img.resize(tuple(size_wh), resample=bilinear)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr.copy())
        return x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std along dim 1 of a batch (N×C×…); identity without mean/std."""
        if self.mean is None and self.std is None:
            return x
        view = (1, -1) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (-1,)
        if self.mean is not None:
            x = x - torch.tensor(self.mean, dtype=torch.float32).view(view)
        if self.std is not None:
            x = x / torch.tensor(self.std, dtype=torch.float32).view(view)
        return x

    def check_channels(self, channels: int, where: str) -> None:
        for field_name in ("mean", "std"):
            v = getattr(self, field_name)
            if v is not None and len(v) not in (1, channels):
                raise DataError(f"{where}: --{field_name} has {len(v)} values but the inputs "
                                f"have {channels} channels", "give one value per channel")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(x)


PRESETS: dict[str, Preprocess] = {
    "imagenet": Preprocess(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                           name="imagenet"),
    "none": Preprocess(),
}


def preprocess_from_options(preset: str | None = None, *, resize: int | None = None,
                            crop: int | None = None, mean: str | Sequence[float] | None = None,
                            std: str | Sequence[float] | None = None) -> Preprocess:
    """A preset (`imagenet`, `none`) with any explicit step overriding it; `mean`/`std` may be
    the command line's comma-separated text. Bad values are a one-line DataError."""
    if preset is not None and preset not in PRESETS:
        raise DataError(f"unknown --preprocess {preset!r}",
                        f"choose one of {', '.join(PRESETS)}, or give --resize/--crop/--mean/--std")
    base = PRESETS[preset] if preset else Preprocess()
    changed = {k: v for k, v in (("resize", resize), ("crop", crop),
                                 ("mean", _floats(mean, "mean")), ("std", _floats(std, "std")))
               if v is not None}
    if not changed:
        return base
    fields = {"resize": base.resize, "crop": base.crop, "mean": base.mean, "std": base.std,
              **changed}
    name = f"{base.name} (modified)" if base.name else None
    return Preprocess(**fields, name=name)


def as_preprocess(value) -> Preprocess:
    """What the Python API accepts: None, a `Preprocess`, a preset name or a plan's dict."""
    if value is None:
        return Preprocess()
    if isinstance(value, Preprocess):
        return value
    if isinstance(value, str):
        return preprocess_from_options(value)
    if isinstance(value, dict):
        return Preprocess.from_dict(value, where="preprocess")
    raise DataError(f"preprocess must be a preset name, a dict or a Preprocess, got "
                    f"{type(value).__name__}")


def _floats(v, what: str) -> tuple[float, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            return tuple(float(c) for c in v.split(",") if c.strip())
        except ValueError:
            raise DataError(f"--{what} {v!r} is not a comma-separated list of numbers",
                            f"e.g. --{what} " + ("0.485,0.456,0.406" if what == "mean"
                                                 else "0.229,0.224,0.225")) from None
    return tuple(float(c) for c in v)


def _shorter_side_to(size_wh: tuple[int, int], n: int) -> tuple[int, int]:
    w, h = size_wh
    if w <= h:
        return n, int(n * h / w)
    return int(n * w / h), n


def _center_crop(img, n: int):
    from PIL import Image

    w, h = img.size
    if w < n or h < n:  # pad symmetrically with zeros first, as torchvision does
        pw, ph = max(0, n - w), max(0, n - h)
        padded = Image.new(img.mode, (w + pw, h + ph))
        padded.paste(img, (pw // 2, ph // 2))
        img, (w, h) = padded, padded.size
    top = int(round((h - n) / 2.0))
    left = int(round((w - n) / 2.0))
    return img.crop((left, top, left + n, top + n))


def _fmt(v) -> str:
    return "-" if v is None else "(" + ", ".join(f"{c:g}" for c in v) + ")"
