"""Image preprocessing (`advisor.preprocess`): the torchvision recipe without torchvision, the
command-line options, and what plan.json records so `apply` reads images the same way."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from advisor.errors import DataError
from advisor.preprocess import PRESETS, Preprocess, preprocess_from_options


def _jpeg_folder(root, sizes=((320, 240), (200, 300), (256, 256), (180, 150))):
    """root/<class>/<n>.jpg with smooth random content, in sizes that need resize and crop."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        d = root / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
        img.save(d / f"{i}.jpg", quality=90)
    return root


@pytest.mark.zoo
def test_imagenet_preset_matches_torchvision_transforms(tmp_path):
    transforms = pytest.importorskip("torchvision.transforms",
                                     reason="the comparison needs torchvision (vision leg)")
    from PIL import Image

    from advisor.data import load_data

    folder = _jpeg_folder(tmp_path / "imgs")
    loader = load_data(str(folder), input_shape=(1, 3, 224, 224), batch_size=8,
                       preprocess=PRESETS["imagenet"])
    x, y = next(iter(loader))
    ref_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                 transforms.ToTensor(),
                                 transforms.Normalize((0.485, 0.456, 0.406),
                                                      (0.229, 0.224, 0.225))])
    files = sorted(folder.rglob("*.jpg"), key=lambda p: (p.parent.name, p.name))
    ref = torch.stack([ref_tf(Image.open(f).convert("RGB")) for f in files])
    assert x.shape == (4, 3, 224, 224)
    assert float((x - ref).abs().max()) < 1e-5
    assert y.tolist() == [int(f.parent.name[-1]) for f in files]


@pytest.mark.zoo
def test_small_image_is_padded_before_the_crop_like_torchvision(tmp_path):
    transforms = pytest.importorskip("torchvision.transforms", reason="needs torchvision")
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 90, 3), dtype=np.uint8))
    pre = Preprocess(crop=64)
    ours = pre.image_to_tensor(img, None)
    ref = transforms.Compose([transforms.CenterCrop(64), transforms.ToTensor()])(img)
    assert ours.shape == ref.shape == (3, 64, 64)
    assert float((ours - ref).abs().max()) < 1e-6


def test_works_without_torchvision(tmp_path, monkeypatch):
    """The recipe is Pillow + torch: with torchvision unimportable it still runs."""
    from advisor.data import load_data

    monkeypatch.setitem(sys.modules, "torchvision", None)
    folder = _jpeg_folder(tmp_path / "imgs")
    x, _ = next(iter(load_data(str(folder), batch_size=8, preprocess=PRESETS["imagenet"])))
    assert x.shape == (4, 3, 224, 224)
    # normalised: roughly centred, not in [0, 1]
    assert float(x.min()) < 0 and float(x.max()) > 1


def test_mixed_sizes_without_preprocess_need_a_shape(tmp_path):
    from advisor.data import load_data

    folder = _jpeg_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match="--preprocess imagenet"):
        load_data(str(folder))


def test_options_override_the_preset_and_bad_values_are_one_line():
    p = preprocess_from_options("imagenet", crop=192, mean="0.5,0.5,0.5")
    assert (p.resize, p.crop, p.mean, p.std) == (256, 192, (0.5, 0.5, 0.5), PRESETS["imagenet"].std)
    assert p.name == "imagenet (modified)"
    assert preprocess_from_options(None, resize=128).to_dict() == {
        "name": None, "resize": 128, "crop": None, "mean": None, "std": None}
    for kwargs, match in (({"mean": "a,b"}, "comma-separated"), ({"std": "1,0,1"}, "contains 0"),
                          ({"resize": 0}, "positive")):
        with pytest.raises(DataError, match=match) as e:
            preprocess_from_options(None, **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="unknown --preprocess"):
        preprocess_from_options("imagenette")


def test_channel_count_is_checked(tmp_path):
    from advisor.data import load_data

    folder = _jpeg_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match="--mean has 2 values but the inputs have 3 channels"):
        load_data(str(folder), input_shape=(1, 3, 224, 224),
                  preprocess=Preprocess(resize=256, crop=224, mean=(0.5, 0.5)))


def test_round_trip_through_plan_data():
    p = PRESETS["imagenet"]
    again = Preprocess.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again == p
    assert Preprocess.from_dict(None) == Preprocess()
    with pytest.raises(DataError, match="unknown preprocess field"):
        Preprocess.from_dict({"resize": 256, "flip": True})
    assert "center crop 224" in p.describe()


def test_bundle_records_preprocess_and_normalises_tensor_files(tmp_path):
    from advisor.bundle import load_bundle

    x = torch.rand(6, 3, 8, 8)
    torch.save({"inputs": x, "labels": torch.arange(6) % 2}, tmp_path / "val.pt")
    pre = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    b = load_bundle(str(tmp_path / "val.pt"), None, None, (1, 3, 8, 8), preprocess=pre)
    assert b.specs["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    got = torch.cat([xb for xb, _ in b.val] + [xb for xb, _ in b.test])
    assert torch.allclose(got.sort(0).values, ((x - 0.5) / 0.25).sort(0).values, atol=1e-6)
    plain = load_bundle(str(tmp_path / "val.pt"), None, None, (1, 3, 8, 8))
    assert "preprocess" not in plain.specs


@pytest.mark.slow
def test_cli_records_preprocess_in_report_and_plan(tmp_path):
    """`analyze --preprocess imagenet --crop 192` on a JPEG folder: the report and plan.json say
    how the images were prepared, and `apply` reads the plan's data the same way."""
    import subprocess

    folder = _jpeg_folder(tmp_path / "imgs", sizes=((260, 300), (300, 260)) * 4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "advisor", "analyze", "advisor.examples.models:resnet",
           "--input-shape", "1,3,192,192", "--data", str(folder), "--preprocess", "imagenet",
           "--crop", "192", "--retrain", "none", "--max-trials", "1", "--repeats", "3",
           "--max-drop", "100%", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["preprocess"]["crop"] == 192
    assert report["data"]["preprocess"]["name"] == "imagenet (modified)"
    assert "center crop 192" in (out / "report.md").read_text()
    plan_file = out / "plan.json" if (out / "plan.json").exists() else out / "plan-closest.json"
    plan = json.loads(plan_file.read_text())
    assert Preprocess.from_dict(plan["data"]["preprocess"]) == \
        preprocess_from_options("imagenet", crop=192)
