"""Every data format yields (float32 inputs, int64 labels) batches; bad data gives a DataError
that names the file and the fix."""
from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from advisor.data import load_data, split_loader
from advisor.errors import DataError

X = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.arange(10) % 3


def _all(loader):
    xs, ys = zip(*loader)
    for x, y in zip(xs, ys):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
    return torch.cat(xs), torch.cat(ys)


# ---- .pt / .npz --------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [{"inputs": X, "labels": Y}, {"x": X, "y": Y}, (X, Y),
                                     [X, Y.int()]])
def test_pt_layouts(tmp_path, payload):
    f = tmp_path / "d.pt"
    torch.save(payload, f)
    loader = load_data(str(f), batch_size=4, input_shape=(1, 3, 4, 4))
    x, y = _all(loader)
    torch.testing.assert_close(x, X)
    assert torch.equal(y, Y) and loader.batch_size == 4


def test_npz(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, inputs=X.numpy(), labels=Y.numpy().astype(np.int32))
    x, y = _all(load_data(str(f)))
    torch.testing.assert_close(x, X)
    assert torch.equal(y, Y)


def test_uint8_inputs_are_scaled_and_mean_std_applied(tmp_path):
    f = tmp_path / "d.npz"
    raw = np.full((4, 3, 2, 2), 255, dtype=np.uint8)
    np.savez(f, x=raw, y=np.zeros(4, dtype=np.int64))
    x, _ = _all(load_data(str(f), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)))
    assert torch.allclose(x[:, 0], torch.full((4, 2, 2), 2.0))
    assert torch.allclose(x[:, 1], torch.full((4, 2, 2), 1.0))
    assert torch.allclose(x[:, 2], torch.full((4, 2, 2), 0.5))


def test_unlabelled_gets_minus_one(tmp_path):
    f = tmp_path / "calib.pt"
    torch.save({"inputs": X}, f)
    _, y = _all(load_data(str(f), labelled=False))
    assert torch.equal(y, torch.full((10,), -1))
    with pytest.raises(DataError, match="no labels") as ei:
        load_data(str(f))
    assert str(f) in ei.value.message


def test_shuffle_is_seeded(tmp_path):
    f = tmp_path / "d.pt"
    torch.save({"inputs": X, "labels": Y}, f)
    a = _all(load_data(str(f), batch_size=3, shuffle=True, seed=1))[1]
    b = _all(load_data(str(f), batch_size=3, shuffle=True, seed=1))[1]
    assert torch.equal(a, b) and sorted(a.tolist()) == sorted(Y.tolist())


@pytest.mark.parametrize("payload,match", [
    ({"images_x": X, "labels": Y}, "no inputs"),
    ({"inputs": X, "labels": Y[:7]}, "10 inputs but 7 labels"),
    ({"inputs": X[:0], "labels": Y[:0]}, "no samples"),
    ({"inputs": X, "labels": torch.nn.functional.one_hot(Y)}, "one class index"),
    ({"inputs": X, "labels": Y.float() + 0.5}, "fractional"),
    ({"inputs": X, "labels": Y - 5}, "negative"),
    ({"inputs": X.long(), "labels": Y}, "dtype"),
    ({"inputs": X.permute(0, 2, 3, 1).contiguous(), "labels": Y}, "channels-last"),
    ("just a string", "expected a dict"),
])
def test_bad_pt(tmp_path, payload, match):
    f = tmp_path / "bad.pt"
    torch.save(payload, f)
    with pytest.raises(DataError) as ei:
        load_data(str(f), input_shape=(1, 3, 4, 4))
    text = f"{ei.value.message} {ei.value.hint}"
    assert match in text and str(f) in ei.value.message


def test_missing_empty_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_data(str(tmp_path / "nope.pt"))
    empty = tmp_path / "e.pt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_data(str(empty))
    csv = tmp_path / "d.csv"
    csv.write_text("1,2,3\n")
    with pytest.raises(DataError, match="unsupported data file"):
        load_data(str(csv))
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(DataError, match="cannot be read"):
        load_data(str(garbage))


def test_pickled_objects_in_pt_are_refused_and_not_run(tmp_path, helpers):
    marker = tmp_path / "pwned"
    f = tmp_path / "evil.pt"
    torch.save({"inputs": X, "labels": Y, "extra": helpers.MarkerPayload(marker)}, f)
    with pytest.raises(DataError, match="pickled Python objects"):
        load_data(str(f))
    assert not marker.exists()


def test_npz_object_arrays_are_refused(tmp_path):
    f = tmp_path / "obj.npz"
    np.savez(f, inputs=np.array([object()] * 3, dtype=object), labels=np.zeros(3))
    with pytest.raises(DataError, match="cannot be read as .npz"):
        load_data(str(f))


# ---- image folders ------------------------------------------------------------------------------

def _png(path, size=(8, 6), color=(255, 0, 0), mode="RGB"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color if mode == "RGB" else 128).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        for i in range(3):
            _png(root / cls / f"{i}.png", color=color)
    (root / "cat" / "notes.txt").write_text("ignored: not an image")
    return root


def test_image_folder_labels_sorted_classes_and_resizes(folder):
    loader = load_data(str(folder), batch_size=4, input_shape=(1, 3, 16, 16))
    x, y = _all(loader)
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert loader.dataset.classes == ["cat", "dog"]
    assert torch.allclose(x[0, 0], torch.ones(16, 16))  # cat is red
    assert torch.allclose(x[0, 2], torch.zeros(16, 16))
    assert torch.allclose(x[5, 2], torch.ones(16, 16))  # dog is blue, scaled to [0, 1]


def test_image_folder_grey_and_normalised(folder):
    x, _ = _all(load_data(str(folder), input_shape=(1, 1, 8, 8), mean=0.5, std=0.5))
    assert x.shape == (6, 1, 8, 8)
    red_grey = 0.299  # ITU-R 601-2 luma of pure red, as Pillow converts
    assert torch.allclose(x[0], torch.full((1, 8, 8), (red_grey - 0.5) / 0.5), atol=0.01)


def test_image_folder_without_shape_keeps_the_common_size(folder):
    x, _ = _all(load_data(str(folder)))
    assert x.shape == (6, 3, 6, 8)  # H=6, W=8


def test_image_folder_sizes_differ_without_shape(folder):
    _png(folder / "dog" / "big.png", size=(20, 20))
    with pytest.raises(DataError, match="differ in size") as ei:
        load_data(str(folder))
    assert "--input-shape" in ei.value.hint


def test_bad_image_is_named(folder):
    bad = folder / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(DataError, match="not a readable image") as ei:
        load_data(str(folder), input_shape=(1, 3, 8, 8))
    assert "broken.png" in ei.value.message


def test_truncated_image_is_named(folder):
    good = (folder / "cat" / "0.png").read_bytes()
    from PIL import Image
    big = folder / "cat" / "big.png"
    Image.effect_noise((64, 64), 50).save(big)
    big.write_bytes(big.read_bytes()[:200])
    with pytest.raises(DataError, match="big.png"):
        load_data(str(folder), input_shape=(1, 3, 8, 8))
    assert good  # the intact images were fine


def test_flat_folder_is_unlabelled_data(tmp_path):
    for i in range(3):
        _png(tmp_path / "flat" / f"{i}.jpg")
    _, y = _all(load_data(str(tmp_path / "flat"), labelled=False, input_shape=(1, 3, 8, 8)))
    assert y.tolist() == [-1, -1, -1]
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(str(tmp_path / "flat"))


def test_folder_without_images(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="contains no images"):
        load_data(str(tmp_path / "empty"))


# ---- hooks --------------------------------------------------------------------------------------

HOOKS = '''
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
X = torch.randn(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.arange(10) % 3

class DictSet(Dataset):
    def __len__(self):
        return 10
    def __getitem__(self, i):
        return {"image": X[i].double(), "target": int(Y[i])}

def loader():
    return DataLoader(TensorDataset(X, Y), batch_size=4)

def inputs_only_loader():
    return DataLoader(X, batch_size=4)

def dataset():
    return DictSet()

def tensors():
    return X, Y

def broken():
    raise RuntimeError("database unreachable")

def empty():
    return DataLoader(TensorDataset(X[:0], Y[:0]), batch_size=4)

not_callable = 3
'''


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    (tmp_path / "io_data_hooks.py").write_text(HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "io_data_hooks"
    sys.modules.pop("io_data_hooks", None)


@pytest.mark.parametrize("fn", ["loader", "dataset", "tensors"])
def test_hook(hooks, fn):
    x, y = _all(load_data(f"{hooks}:{fn}", batch_size=4))
    torch.testing.assert_close(x, X)
    assert torch.equal(y, Y)


def test_hook_without_labels_for_calibration(hooks):
    _, y = _all(load_data(f"{hooks}:inputs_only_loader", labelled=False))
    assert (y == -1).all() and len(y) == 10
    with pytest.raises(DataError, match="no labels"):
        load_data(f"{hooks}:inputs_only_loader")


@pytest.mark.parametrize("fn,match", [("broken", "database unreachable"), ("empty", "empty"),
                                      ("not_callable", "not a function"),
                                      ("missing", "no attribute")])
def test_bad_hooks(hooks, fn, match):
    with pytest.raises(DataError, match=match):
        load_data(f"{hooks}:{fn}")


# ---- split_loader --------------------------------------------------------------------------------

def test_split_is_disjoint_complete_seeded_and_keeps_batch_size(tmp_path):
    f = tmp_path / "d.pt"
    x_all = torch.arange(50, dtype=torch.float32).view(50, 1)
    torch.save({"inputs": x_all, "labels": torch.zeros(50, dtype=torch.long)}, f)
    val, test = split_loader(load_data(str(f), batch_size=8), (0.5, 0.5), seed=3)
    a, b = _all(val)[0].flatten().tolist(), _all(test)[0].flatten().tolist()
    assert len(a) == 25 and len(b) == 25 and not set(a) & set(b)
    assert sorted(a + b) == list(range(50)) and val.batch_size == 8
    again = split_loader(load_data(str(f), batch_size=8), (0.5, 0.5), seed=3)[0]
    assert _all(again)[0].flatten().tolist() == a
    other = split_loader(load_data(str(f), batch_size=8), (0.5, 0.5), seed=4)[0]
    assert _all(other)[0].flatten().tolist() != a


def test_split_tensors_and_hook_batches(hooks):
    parts = split_loader((X, Y), (0.3, 0.3), seed=0)
    assert [len(p.dataset) for p in parts] == [3, 3]
    val, test = split_loader(load_data(f"{hooks}:loader"), (0.5, 0.5))
    assert len(val.dataset) + len(test.dataset) == 10


@pytest.mark.parametrize("fractions,match", [((0.7, 0.7), "invalid split"),
                                             ((0.0, 1.0), "invalid"), ((0.01, 0.5), "too few")])
def test_bad_splits(fractions, match):
    with pytest.raises(DataError, match=match):
        split_loader((X, Y), fractions)


def test_loaders_survive_pickling_for_worker_processes(tmp_path, folder):
    f = tmp_path / "d.pt"
    torch.save({"inputs": X, "labels": Y}, f)
    loaders = (load_data(str(f), shuffle=True),
               load_data(str(folder), input_shape=(1, 3, 8, 8)),
               *split_loader(load_data(str(f)), (0.5, 0.5)))
    for loader in loaders:
        clone = pickle.loads(pickle.dumps(loader))
        assert isinstance(clone, DataLoader)
        torch.testing.assert_close(_all(clone)[0].sum(), _all(loader)[0].sum())
