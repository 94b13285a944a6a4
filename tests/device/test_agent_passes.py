"""A pass's own figures on a device target come from the device: the int8 fp32-fallback's
accuracies and timings, and the describe() speed-up, are computed through the agent."""
from __future__ import annotations

import pytest


@pytest.fixture
def device_target(local_link, tmp_path, write_target):
    from advisor.targets import load_target

    table = {"command": list(local_link.command), "cache_dir": local_link.cache_dir}
    return load_target(write_target(tmp_path / "dev.toml", "dev", table, threads=1))


def test_int8_fallback_decides_on_the_devices_numbers(trained_example, digits_loaders,
                                                      device_target, tmp_path):
    from advisor.device.connection import connection
    from advisor.examples.build import INPUT_SHAPE
    from advisor.export import export_onnx
    from advisor.fileio import sha256_file
    from advisor.passes.base import OnnxArtifact, PassContext
    from advisor.passes.quantize_ort import Int8StaticConfig, int8_static

    model, _ = trained_example("resnet", epochs=4)
    src = tmp_path / "resnet.onnx"
    export_onnx(model, src, INPUT_SHAPE)
    ctx = PassContext.for_shape(INPUT_SHAPE, target=device_target,
                                val_loader=digits_loaders["val"],
                                calib_loader=digits_loaders["train"], workdir=tmp_path / "w")
    res = int8_static(OnnxArtifact(src, INPUT_SHAPE, {}),
                      Int8StaticConfig(max_drop=5.0, num_samples=64), ctx)
    fb = res.info["fallback"]
    assert fb["fp32"]["latency_ms"] > 0 and fb["final"]["speedup_vs_fp32"] > 0
    # the fp32 model and the int8 result were uploaded to the device to be run and timed there
    conn = connection(device_target.link)
    shas = [sha256_file(src), sha256_file(res.model.path)]
    assert conn.call("has", blobs=shas)["have"] == shas
