"""Image folders as datasets: `root/<class name>/<image>` read lazily with Pillow.

Classes are the sub-folder names in sorted order, so label *i* is the *i*-th name — it must be
the order the model was trained with. A folder without class sub-folders is unlabelled data
(label -1) where that is allowed. Every image is decoded once when the dataset is built, so a
corrupt file fails up front with its name, not in the middle of a run. How an image becomes a
tensor (resize, crop, normalise) is `advisor.preprocess.Preprocess`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from advisor.errors import DataError
from advisor.preprocess import Preprocess

__all__ = ["ImageFolderData", "IMAGE_SUFFIXES", "UNLABELLED"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                            ".ppm", ".pgm"})
UNLABELLED = -1


class ImageFolderData(Dataset):
    """`root/<class>/<image>` read lazily with Pillow; every image is checked when built.

    Label i is the i-th class folder name in sorted order (`.classes`). A folder without class
    sub-folders gives unlabelled samples (label -1) when `labelled=False`.
    """

    def __init__(self, root: Path, input_shape: tuple[int, ...] | None, labelled: bool,
                 preprocess: Preprocess | None = None):
        self.root = Path(root)
        self.classes, self.samples, sizes = _scan_folder(self.root, labelled)
        channels = input_shape[1] if input_shape is not None and len(input_shape) == 4 else 3
        if channels not in (1, 3):
            raise DataError(f"{root}: images can be read as 1 or 3 channels, the input shape "
                            f"asks for {channels}", "use a pkg.module:function data hook")
        self.mode = "L" if channels == 1 else "RGB"
        self.preprocess = preprocess or Preprocess()
        self.preprocess.check_channels(channels, str(root))
        self.size = (input_shape[3], input_shape[2]) if input_shape is not None and \
            len(input_shape) == 4 else None
        if self.size is None and not self.preprocess.resizes_itself:
            self.size = _common_size(sizes, self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        img = _open_image(path)
        with img:
            x = self.preprocess.image_to_tensor(img.convert(self.mode), self.size)
        return self.preprocess.normalise(x.unsqueeze(0))[0].contiguous(), label


def _scan_folder(root: Path, labelled: bool
                 ) -> tuple[list[str], list[tuple[Path, int]], dict[tuple[int, int], Path]]:
    """(class names, [(image, label)], {size: first image of that size}); verifies each image."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_dirs:
        classes = [p.name for p in class_dirs]
        samples = [(f, i) for i, d in enumerate(class_dirs) for f in _images_in(d)]
    elif labelled:
        raise DataError(f"{root} has no class sub-folders, so the images have no labels",
                        "arrange it as root/<class name>/<image> (classes in training order)")
    else:
        classes, samples = [], [(f, UNLABELLED) for f in _images_in(root)]
    if not samples:
        raise DataError(f"{root} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                        "point --data at the folder whose sub-folders hold the images")
    sizes: dict[tuple[int, int], Path] = {}
    for f, _ in samples:
        sizes.setdefault(_verify_image(f), f)
    return classes, samples, sizes


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and
                  f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))


def _open_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable image ({type(e).__name__})",
                        "remove or replace the file") from e


def _verify_image(path: Path) -> tuple[int, int]:
    """Decode the image fully once, so a corrupt file fails here with its name, not mid-run."""
    img = _open_image(path)
    try:
        with img, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            return img.size
    except Exception as e:
        raise DataError(f"{path} is not a readable image (truncated or corrupt: "
                        f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})",
                        "remove or replace the file") from e


def _common_size(sizes: dict[tuple[int, int], Path], root: Path) -> tuple[int, int]:
    if len(sizes) > 1:
        (a, fa), (b, fb) = list(sizes.items())[:2]
        raise DataError(f"{root}: images differ in size ({fa.name} is {a[0]}x{a[1]}, {fb.name} "
                        f"is {b[0]}x{b[1]}) and no input shape is known to resize them to",
                        "pass --input-shape 1,3,H,W, or --preprocess imagenet (resize 256, "
                        "center crop 224)")
    return next(iter(sizes))
