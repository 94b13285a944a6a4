"""Target profiles: the built-ins, loading by path, every kind of malformed file, availability,
and host detection."""
from __future__ import annotations

import pytest

from advisor.errors import TargetError
from advisor.measure.host import detect_host, parse_cpuinfo
from advisor.targets import RuntimeSpec, Target, list_targets, load_target, target_available

from .conftest import ONE_THREAD_TOML


def test_builtin_targets_describe_their_devices():
    cpu, edge, gpu = load_target("cpu"), load_target("edge-arm"), load_target("gpu")
    assert {r.name for r in cpu.runtimes} == {"torch", "onnxruntime"}
    assert cpu.runtime("onnxruntime").provider == "CPUExecutionProvider"
    assert cpu.runtime("torch").provider is None
    assert cpu.precisions == ("fp32", "int8") and cpu.sparse_kernels == ("csr-linear",)
    assert not cpu.emulated and cpu.threads is None

    assert edge.emulated and edge.threads in (1, 2) and edge.memory_budget_mb == 512
    assert "int8" in edge.precisions and edge.sparse_kernels == ()

    assert gpu.device == "cuda" and gpu.sparse_kernels == ("2:4",)
    assert set(gpu.precisions) == {"fp32", "fp16", "bf16", "int8"}
    assert gpu.runtime("onnxruntime").provider == "CUDAExecutionProvider"
    assert any("Ampere" in n for n in gpu.notes)
    with pytest.raises(AttributeError):  # frozen
        cpu.threads = 3


def test_list_targets_has_the_builtins():
    names = [t.name for t in list_targets()]
    assert {"cpu", "edge-arm", "gpu"} <= set(names)
    assert names == sorted(names)


def test_load_by_path(write_toml):
    path = write_toml(ONE_THREAD_TOML, "mine.toml")
    t = load_target(str(path))
    assert isinstance(t, Target) and t.name == "one-thread" and t.threads == 1
    assert t.runtimes == (RuntimeSpec("onnxruntime", "CPUExecutionProvider"),
                          RuntimeSpec("torch", None))
    assert t.source_path == path.resolve()


def test_unknown_name_lists_builtins():
    with pytest.raises(TargetError) as e:
        load_target("tpu")
    assert "unknown target 'tpu'" in e.value.message and "edge-arm" in e.value.hint


def test_missing_file():
    with pytest.raises(TargetError, match="does not exist"):
        load_target("nowhere/mine.toml")


_GOOD = {"name": '"x"', "device": '"cpu"', "precisions": '["fp32"]'}
_RUNTIME = '\n[[runtimes]]\nname = "onnxruntime"\n'


def _profile(extra: str = "", drop: str | None = None, runtime: str = _RUNTIME, **over) -> str:
    fields = {**_GOOD, **over}
    body = "\n".join(f"{k} = {v}" for k, v in fields.items() if k != drop)
    return f"{body}\n{extra}\n{runtime}"


@pytest.mark.parametrize("text, field", [
    ("name = \"x\"\ndevice = [", "invalid TOML"),
    (_profile(drop="device"), "'device' is missing"),
    (_profile(drop="precisions"), "'precisions' is missing"),
    (_profile(runtime=""), "'runtimes' is missing"),
    (_profile(extra="speed = 3"), "unknown field 'speed'"),
    (_profile(extra='threads = "two"'), "'threads' must be a positive integer"),
    (_profile(extra="threads = 0"), "'threads' must be a positive integer"),
    (_profile(extra="memory_budget_mb = -5"), "'memory_budget_mb' must be a positive"),
    (_profile(extra='emulated = "yes"'), "'emulated' must be true or false"),
    (_profile(name="3"), "'name' must be a str"),
    (_profile(device='"tpu"'), "'device' must be one of"),
    (_profile(precisions='["fp8"]'), "'precisions' has unknown value 'fp8'"),
    (_profile(precisions='"fp32"'), "'precisions' must be a list of strings"),
    (_profile(extra='sparse_kernels = ["4:8"]'), "'sparse_kernels' has unknown value"),
    (_profile(runtime='\n[[runtimes]]\nname = "tensorrt"\n'), "'runtimes[0].name' names an unknown runtime"),
    (_profile(runtime='\n[[runtimes]]\nname = "torch"\nprovider = "CPUExecutionProvider"\n'),
     "'runtimes[0].provider' is only for onnxruntime"),
    (_profile(runtime='\n[[runtimes]]\nname = "onnxruntime"\nprovider = "CUDAExecutionProvider"\n'),
     "'runtimes[0].provider' must be one of CPUExecutionProvider"),
    (_profile(runtime='\n[[runtimes]]\nname = "torch"\nflavour = 1\n'), "has unknown key 'flavour'"),
    (_profile(extra='runtimes = "torch"', runtime=""), "'runtimes' must be a non-empty array"),
])
def test_malformed_profiles_name_file_and_field(write_toml, text, field):
    path = write_toml(text, "bad.toml")
    with pytest.raises(TargetError) as e:
        load_target(path)
    assert str(path) in e.value.message
    assert field in e.value.message


def test_cpu_targets_are_available_here():
    ok, why = target_available(load_target("cpu"))
    assert ok and "core" in why
    ok, why = target_available(load_target("edge-arm"))
    assert ok and "emulated" in why and "512 MB" in why


def test_gpu_target_unavailable_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU")
    gpu = load_target("gpu")
    ok, why = target_available(gpu)
    assert not ok and "no CUDA GPU" in why


def test_gpu_target_refused_by_measurement(tiny_artifacts):
    import torch

    from advisor.measure.latency import measure_latency

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA GPU")
    with pytest.raises(TargetError, match="no CUDA GPU"):
        measure_latency(tiny_artifacts["onnx"], "onnxruntime", tiny_artifacts["shape"],
                        target=load_target("gpu"))


def test_detect_host_records_what_matters():
    h = detect_host()
    for key in ("arch", "cpu_model", "isa", "cores_logical", "cores_physical", "cores_available",
                "memory_mb", "gpu", "torch", "onnxruntime", "load_average"):
        assert key in h
    assert h["cores_available"] >= 1 and h["memory_mb"] > 0
    assert isinstance(h["isa"], list) and h["torch"]
    h["isa"].append("mutated")
    assert "mutated" not in detect_host()["isa"]  # a copy each call


def test_parse_cpuinfo_x86_and_arm():
    x86 = parse_cpuinfo("processor\t: 0\nmodel name\t: Some Xeon\n"
                        "flags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni amx_tile amx_int8\n")
    assert x86["cpu_model"] == "Some Xeon"
    assert {"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"} <= set(x86["isa"])
    arm = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd evtstrm asimddp i8mm\n"
                        "CPU implementer\t: 0x41\nCPU part\t: 0xd0c\n")
    assert {"neon", "asimd", "dotprod", "asimddp", "i8mm"} <= set(arm["isa"])
    assert "0xd0c" in arm["cpu_model"]
    assert "avx2" not in arm["isa"]


def test_a_target_carries_the_cpu_it_deploys_to(write_toml):
    """arch/isa: declared in the profile, Arm by name, else this host's (one ISA detection)."""
    from advisor.measure.host import arch_family, detect_cpu

    cpu, edge = load_target("cpu"), load_target("edge-arm")
    assert (cpu.arch, cpu.cpu_source) == (arch_family(), "host")
    assert cpu.isa == tuple(detect_cpu()["isa"]) == tuple(detect_host()["isa"])
    assert (edge.arch, edge.cpu_source) == ("arm", "profile")
    board = load_target(write_toml(ONE_THREAD_TOML.replace('"one-thread"', '"my-arm-board"')))
    assert (board.arch, board.isa, board.cpu_source) == ("arm", (), "name")
    declared = load_target(write_toml(ONE_THREAD_TOML.replace(
        "emulated = false", 'emulated = false\narch = "x86"\nisa = ["avx2", "avx512_vnni"]')))
    assert (declared.arch, declared.isa, declared.cpu_source) == \
        ("x86", ("avx2", "avx512_vnni"), "profile")
    assert declared.to_json()["isa"] == ["avx2", "avx512_vnni"]


@pytest.mark.parametrize("extra,field", [('arch = "riscv"', "arch"), ("arch = 3", "arch"),
                                         ('isa = ["avx2"]', "isa"),
                                         ('arch = "x86"\nisa = ["avx9000"]', "isa")])
def test_a_malformed_cpu_declaration_names_the_field(write_toml, extra, field):
    text = ONE_THREAD_TOML.replace("emulated = false", f"emulated = false\n{extra}")
    with pytest.raises(TargetError) as e:
        load_target(write_toml(text))
    assert f"field {field!r}" in e.value.message
