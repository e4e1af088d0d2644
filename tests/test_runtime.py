"""pipeline.runtime: device and precision choice, GPU settings, checkpoints and model loading, the one
module that training, ``predict`` and ``detect`` share (real torch, real files; no GPU needed)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from pipeline import runtime
from pipeline.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answers")


# ---------------------------------------------------------------------------------------------
# device
# ---------------------------------------------------------------------------------------------

def test_cpu_and_auto_without_gpu_resolve_to_cpu(monkeypatch):
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")  # a torchrun rank asking for the CPU still gets the CPU
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert runtime.resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "", "cuda:0"])
def test_unknown_device_is_a_config_error_listing_the_valid_ones(name):
    with pytest.raises(ConfigError) as e:
        runtime.resolve_device(name)
    msg = str(e.value)
    assert "\n" not in msg and "auto, cpu, cuda" in msg and repr(name) in msg


@no_cuda
def test_cuda_without_gpu_is_a_config_error_naming_what_is_valid_here():
    with pytest.raises(ConfigError, match=r"CUDA is not available; valid here: auto, cpu") as e:
        runtime.resolve_device("cuda")
    assert "\n" not in str(e.value)


def test_dist_info_reads_the_torchrun_environment(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert runtime.dist_info() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert runtime.dist_info() == (3, 4, 1)


def test_configure_device_cpu_inference_changes_nothing_and_cpu_training_is_deterministic():
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    try:
        torch.use_deterministic_algorithms(False)
        runtime.configure_device(torch.device("cpu"))
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark == bench  # a CUDA-only setting: untouched on CPU
        runtime.configure_device(torch.device("cpu"), training=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark == bench
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)


# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("native", [False, True])
def test_precision_on_cpu(native):
    """The flag is irrelevant on CPU: auto and fp32 are fp32 (None), bf16 as asked, fp16 refused."""
    assert runtime.precision_dtype("auto", "cpu", native) is None
    assert runtime.precision_dtype("fp32", "cpu", native) is None
    assert runtime.precision_dtype("bf16", "cpu", native) is torch.bfloat16
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):
        runtime.precision_dtype("fp16", "cpu", native)


def test_resolve_precision_on_cpu_is_the_pure_rule():
    cpu = torch.device("cpu")
    assert runtime.resolve_precision("auto", cpu) is None
    assert runtime.resolve_precision("fp32", cpu) is None
    assert runtime.resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(ConfigError):
        runtime.resolve_precision("fp16", cpu)


def test_precision_rule_on_cuda_follows_native_bf16():
    """auto: bf16 only where the GPU computes it natively, else fp16 (with a gradient scaler)."""
    assert runtime.precision_dtype("auto", "cuda", bf16_native=True) is torch.bfloat16
    assert runtime.precision_dtype("auto", "cuda", bf16_native=False) is torch.float16
    for native in (False, True):  # an explicit choice is taken as asked
        assert runtime.precision_dtype("fp16", "cuda", native) is torch.float16
        assert runtime.precision_dtype("bf16", "cuda", native) is torch.bfloat16
        assert runtime.precision_dtype("fp32", "cuda", native) is None


@pytest.mark.parametrize("name", ["fp64", "AUTO", "half", ""])
def test_unknown_precision_is_a_config_error_listing_the_valid_ones(name):
    with pytest.raises(ConfigError) as e:
        runtime.precision_dtype(name, "cpu")
    msg = str(e.value)
    assert "\n" not in msg and "auto, bf16, fp16, fp32" in msg and repr(name) in msg


@no_cuda
def test_bf16_native_is_false_without_cuda():
    assert runtime.bf16_native() is False


def test_grad_scaler_is_a_pass_through_unless_fp16():
    for dtype in (None, torch.bfloat16):
        s = runtime.grad_scaler(dtype)
        assert not s.is_enabled()
        loss = torch.tensor(2.5)
        assert s.scale(loss) is loss


def test_autocast_none_is_fp32_and_bf16_on_cpu_casts_matmuls():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with runtime.autocast(torch.device("cpu"), None):
        assert (a @ b).dtype == torch.float32
    with runtime.autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# checkpoints and model loading
# ---------------------------------------------------------------------------------------------

def _model_folder(tmp_path: Path):
    """A real (tiny-headed) efficientnet_lite0 classifier saved as a model folder."""
    from pipeline.config import to_dict
    from pipeline.models.classifier import ModelConfig
    from pipeline.utils import write_json

    config = {"task": "classifier", "kind": "2d", "model": to_dict(ModelConfig(weights="none", head_hidden=8))}
    torch.manual_seed(0)
    model = runtime.build_from_config(config).eval()
    d = tmp_path / "model"
    d.mkdir()
    write_json(d / "config.json", config)
    runtime.save_checkpoint(d / "model.pt", model.state_dict())
    return d, model, config


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path):
    d, model, config = _model_folder(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.pt"]  # no temp file left behind
    x = torch.randint(-1000, 400, (3, 3, 32, 32)).float()
    loaded, cfg = runtime.load_model(d, "cpu")
    assert cfg == config and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    state = torch.load(d / "model.pt", weights_only=True)  # plain tensors: loadable with weights_only
    assert state.keys() == model.state_dict().keys()


def test_checkpoint_with_optimizer_state_round_trips(tmp_path):
    m = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(m.parameters())
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    obj = {"model": m.state_dict(), "optimizer": opt.state_dict(), "scaler": runtime.grad_scaler(None).state_dict(),
           "epoch": 3, "history": [{"val_auc": 0.5}]}
    runtime.save_checkpoint(tmp_path / "last.pt", obj)
    back = runtime.load_checkpoint(tmp_path / "last.pt")
    assert back["epoch"] == 3 and back["history"] == [{"val_auc": 0.5}]
    assert all(torch.equal(back["model"][k], v) for k, v in m.state_dict().items())
    opt2 = torch.optim.AdamW(m.parameters())
    opt2.load_state_dict(back["optimizer"])


class _NotWeights:
    pass


def test_load_checkpoint_refuses_missing_corrupt_and_non_weight_pickles(tmp_path):
    with pytest.raises(DataError, match="checkpoint missing") as e:
        runtime.load_checkpoint(tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(e.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot load checkpoint") as e:
        runtime.load_checkpoint(bad)
    assert str(e.value).startswith(f"{bad}: ") and "\n" not in str(e.value)
    obj = tmp_path / "obj.pt"
    torch.save({"x": _NotWeights()}, obj)  # arbitrary objects: refused by weights_only=True
    with pytest.raises(DataError, match="cannot load checkpoint") as e:
        runtime.load_checkpoint(obj)
    msg = str(e.value)  # one short line naming the file and the refused class, no terminal codes
    assert msg.startswith(f"{obj}: ") and "_NotWeights" in msg
    assert "\n" not in msg and "\x1b" not in msg and len(msg) < len(str(obj)) + 300
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty or truncated file"):
        runtime.load_checkpoint(empty)


def test_load_model_refuses_missing_config_and_mismatched_weights(tmp_path):
    with pytest.raises(DataError, match="model config missing"):
        runtime.load_model(tmp_path)
    d, _model, _config = _model_folder(tmp_path)
    runtime.save_checkpoint(d / "model.pt", torch.nn.Linear(2, 2).state_dict())
    with pytest.raises(DataError, match="does not match config.json") as e:
        runtime.load_model(d)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# one home: detect, predict and training import the runtime, detect no training internals
# ---------------------------------------------------------------------------------------------

def _imported_modules(path: Path) -> set[str]:
    """Modules named by every import statement in ``path`` (lazy ones too; relative resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}
    return found


def test_detect_does_not_import_training_internals():
    files = sorted((ROOT / "pipeline" / "detect").glob("*.py"))
    assert files
    banned = {"pipeline.train.loop", "pipeline.train.checkpoint"}
    for f in files:
        bad = _imported_modules(f) & banned
        assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}; use pipeline.runtime"


@pytest.mark.parametrize("rel", ["pipeline/detect/job.py", "pipeline/detect/scan.py", "pipeline/train/predict.py",
                                 "pipeline/train/loop.py", "pipeline/train/stage.py", "pipeline/train/segment.py"])
def test_detect_predict_and_training_share_the_runtime_module(rel):
    assert "pipeline.runtime" in _imported_modules(ROOT / rel)


def test_old_import_paths_are_the_runtime_functions():
    from pipeline.train import checkpoint, loop

    assert checkpoint.load_model is runtime.load_model
    assert checkpoint.save_checkpoint is runtime.save_checkpoint
    assert loop.resolve_precision is runtime.resolve_precision
    assert loop.resolve_device is runtime.resolve_device
    assert loop.autocast is runtime.autocast


def test_keep_freed_memory_is_safe_to_repeat():
    import platform

    import torch

    from pipeline.runtime import keep_freed_memory

    first, second = keep_freed_memory(), keep_freed_memory()
    assert first == second == (platform.libc_ver()[0] == "glibc")
    x = torch.ones(64 << 20, dtype=torch.uint8)  # allocations still work and are zero-initialised where asked
    del x
    assert int(torch.zeros(40 << 20, dtype=torch.uint8).sum()) == 0
