"""Multi-process training and prediction (``pipeline.train.distributed``): real process groups on
CPU with gloo, no mocks.

Fast: the helpers in a 2-process gloo group spawned by ``torch.multiprocessing`` (shards of unequal
length gathered in row order, rank 0's answer broadcast, rank 0's weights synced, each rank its own
RNG state) and the per-rank RNG state through a ``weights_only`` checkpoint.
Slow (``-m slow``): ``torchrun --standalone --nproc_per_node 2`` of the real ``train`` stage
(metrics from the gathered shards = one process evaluating the saved model), an interrupted run
resumed under torchrun (bit-identical to the uninterrupted one: each rank's RNG restored), and
``predict`` under torchrun (the files one process writes; probabilities to 1e-6).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.train import distributed as ddp

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# fast: helpers in a spawned 2-process gloo group
# ---------------------------------------------------------------------------------------------

def test_shards_cover_every_row_once_in_order():
    for n in (0, 1, 5, 40, 41):
        for world in (1, 2, 3, 8):
            got = [i for r in range(world) for i in ddp.ShardSampler(n, r, world)]
            assert got == list(range(n))
            sizes = [len(ddp.ShardSampler(n, r, world)) for r in range(world)]
            assert max(sizes) - min(sizes) <= 1


def _group_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        assert ddp.active() and ddp.rank_world() == (rank, world) and ddp.is_main() == (rank == 0)
        n = 8  # rank 0 gets rows 0-3, rank 1 rows 4-7; unequal shards below: 3 and 5 rows
        rows = list(ddp.ShardSampler(n))
        assert rows == list(range(4 * rank, 4 * rank + 4))
        k = 3 if rank == 0 else 5
        base = 0 if rank == 0 else 3
        t = torch.arange(base, base + k, dtype=torch.float32)[:, None].repeat(1, 2)  # (k, 2)
        a = np.arange(base, base + k) * 10
        lst = [f"r{rank}_{i}" for i in range(k)]
        empty = torch.zeros((0, 2)) if rank == 0 else torch.ones((2, 2))
        gt, ga, gl, ge = ddp.gather_cat(t, a, lst, empty)
        assert gt.shape == (8, 2) and torch.equal(gt[:, 0], torch.arange(8.0))
        assert ga.tolist() == [i * 10 for i in range(8)]
        assert gl == [f"r0_{i}" for i in range(3)] + [f"r1_{i}" for i in range(5)]
        assert ge.shape == (2, 2)
        assert ddp.gather_cat(t).shape == (8, 2)  # one item -> the item
        assert ddp.broadcast_object({"auc": 0.5 + rank}) == {"auc": 0.5}
        assert ddp.all_mean(1.0 + rank, 1 + rank) == pytest.approx(3.0 / 3)
        lin = torch.nn.Linear(3, 2)
        bn = torch.nn.BatchNorm1d(2)
        with torch.no_grad():
            lin.weight.fill_(rank)
            bn.running_mean.fill_(rank + 1)
        ddp.sync_module(torch.nn.Sequential(lin, bn))
        assert float(lin.weight.abs().sum()) == 0.0 and torch.equal(bn.running_mean, torch.ones(2))
        ddp.seed_rank(7, 0, rank)
        states = ddp.gather_rng_states()
        assert len(states) == world
        assert not torch.equal(states[0]["torch"], states[1]["torch"])  # each rank its own stream
        ddp.set_rng_state(states[rank])
        draw = (torch.rand(3).tolist(), np.random.rand(), random.random())
        ddp.barrier()
        Path(out, f"rank{rank}.json").write_text(json.dumps(draw))
    finally:
        ddp.teardown()
    assert not ddp.active()


def test_gather_of_unequal_shards_broadcast_sync_and_rng_in_a_two_process_gloo_group(tmp_path):
    mp.start_processes(_group_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")  # fork: no re-import of torch in the children
    d0, d1 = (json.loads((tmp_path / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1))
    assert d0 != d1


def _session_worker(rank: int, world: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    with pytest.raises(RuntimeError, match="boom"), ddp.session("cpu") as created:  # as train / predict do
        assert created and ddp.active() and dist.get_backend() == "gloo"
        assert ddp.gather_cat([rank]) == [0, 1]
        raise RuntimeError("boom")
    assert not ddp.active()  # destroyed on the error, too


def test_session_joins_with_gloo_on_cpu_and_destroys_the_group_on_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_session_worker, args=(2, port), nprocs=2, join=True, start_method="fork")


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    from pipeline.runtime import load_checkpoint, save_checkpoint

    ddp.seed_rank(3, 1, 0)
    state = ddp.rng_state(torch.device("cpu"))
    want = (torch.rand(4), np.random.rand(3), random.random())
    save_checkpoint(tmp_path / "last.pt", {"rng": [state], "world_size": 1, "epoch": 0})
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    ck = load_checkpoint(tmp_path / "last.pt")  # weights_only=True
    assert ddp.restore_rng(ck, torch.device("cpu"), seed=3, rank=0, world=1) is True
    got = (torch.rand(4), np.random.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_resume_with_another_world_size_reseeds_with_a_warning_and_old_checkpoints_still_restore(tmp_path):
    two = {"rng": [ddp.rng_state(), ddp.rng_state()], "world_size": 2, "epoch": 3}
    with pytest.warns(UserWarning, match=r"last.pt: saved by 2 rank\(s\), resumed with 1: random streams re-seeded"):
        assert ddp.restore_rng(two, torch.device("cpu"), seed=5, rank=0, world=1, where="x/last.pt") is False
    a = torch.rand(2)
    ddp.seed_rank(5, 4, 0)  # the fallback: (seed, first epoch to run, rank)
    assert torch.equal(a, torch.rand(2))
    torch.manual_seed(1)
    old = {"rng_cpu": torch.get_rng_state(), "epoch": 0}  # checkpoints written before per-rank states
    b = torch.rand(2)
    assert ddp.restore_rng(old, torch.device("cpu"), seed=0, rank=0, world=1) is True
    assert torch.equal(b, torch.rand(2))


def test_single_process_helpers_are_no_ops():
    assert not ddp.active() and ddp.rank_world()[0] == int(os.environ.get("RANK", "0"))
    t = torch.arange(3)
    assert ddp.gather_cat(t) is t and ddp.broadcast_object({"a": 1}) == {"a": 1}
    assert ddp.all_mean(6.0, 3) == 2.0 and len(ddp.gather_rng_states()) == 1
    with ddp.session("cpu") as created:  # no WORLD_SIZE > 1: joins nothing
        assert created is False or os.environ.get("WORLD_SIZE", "1") != "1"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_precision_on_this_gpu_is_bf16_only_where_native_else_fp16_with_a_scaler():
    from pipeline.runtime import grad_scaler, resolve_precision

    dev = torch.device("cuda", 0)
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    amp = resolve_precision("auto", dev)
    assert amp is (torch.bfloat16 if native else torch.float16)
    assert grad_scaler(amp).is_enabled() == (amp is torch.float16)
    assert grad_scaler(torch.float16).is_enabled()


# ---------------------------------------------------------------------------------------------
# slow: torchrun --nproc_per_node 2 (gloo on CPU) of the real stages
# ---------------------------------------------------------------------------------------------

CFG = {"encoder": "efficientnet_lite0", "weights": "pretrained", "batch_size": 16, "head_hidden": 64, "seed": 3,
       "epochs": 2, "strategy": "progressive", "max_train_samples": 48, "warmup_epochs": 1.0, "device": "cpu"}

DRIVER = textwrap.dedent("""
    import json, sys
    import torch.distributed as dist
    from pipeline.train.config import TrainConfig
    from pipeline.train.stage import train_classifier

    patches, out, live, mode, cfg = sys.argv[1:6]
    kw = {"stop": {"stop_after": 1}, "resume": {"resume": True}}.get(mode, {})
    train_classifier(patches, out, TrainConfig(**json.loads(cfg)), live_dir=live, progress=False, **kw)
    assert not dist.is_initialized(), "process group left alive"
""")


def _torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    res = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


def _single_process_val(model_dir: Path, patches: Path) -> dict:
    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import load_model
    from pipeline.train.data import PatchDataset, split_rows
    from pipeline.train.stage import classifier_task

    model, _ = load_model(model_dir)
    store = PatchStore(patches)
    ds = PatchDataset(store, split_rows(store.index, "val"), model.kind)
    return classifier_task("sampler").evaluate(model, torch.utils.data.DataLoader(ds, batch_size=32),
                                              torch.device("cpu"), None)


@pytest.fixture(scope="module")
def ddp_run(easy_patches, tmp_path_factory):
    """``torchrun --nproc_per_node 2 -m pipeline train`` (the CLI, gloo on CPU), 2 epochs."""
    base = tmp_path_factory.mktemp("ddp")
    params = base / "params.yaml"
    params.write_text("train:\n" + "".join(f"  {k}: {v}\n" for k, v in CFG.items()))
    res = _torchrun(["-m", "pipeline", "train", "--patches", str(easy_patches), "--out", str(base / "a"),
                     "--live", str(base / "la"), "--params", str(params), "--quiet"], cwd=base)
    return base, res


@pytest.mark.slow
def test_torchrun_trains_once_and_gathered_val_metrics_equal_one_process(ddp_run, easy_patches):
    base, res = ddp_run
    out = base / "a"
    assert {"model.pt", "last.pt", "config.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    assert res.stdout.count('"best_val_auc"') == 1  # only rank 0 reports
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["epochs_run"] == 2 and m["n_val"] == 40
    val = _single_process_val(out, easy_patches)  # the saved (best) model, every val row, one process
    for k in ("val_auc", "val_accuracy", "val_loss"):
        assert val[k] == pytest.approx(m[k], abs=1e-6), k
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])  # each rank its own stream
    live = json.loads((base / "la" / "metrics.json").read_text(encoding="utf-8"))
    assert live["step"] == 1


@pytest.mark.slow
def test_torchrun_resume_restores_each_ranks_rng_bit_exact(ddp_run, easy_patches):
    base, _ = ddp_run
    driver = base / "driver.py"
    driver.write_text(DRIVER)
    cfg = json.dumps(CFG)
    for mode in ("stop", "resume"):
        _torchrun([str(driver), str(easy_patches), str(base / "b"), str(base / "lb"), mode, cfg], cwd=base)
        if mode == "stop":
            assert torch.load(base / "b" / "last.pt", weights_only=True)["epoch"] == 0
    sa = torch.load(base / "a" / "last.pt", weights_only=True)
    sb = torch.load(base / "b" / "last.pt", weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["history"] == sb["history"]
    for ra, rb in zip(sa["rng"], sb["rng"]):
        assert torch.equal(ra["torch"], rb["torch"])


@pytest.mark.slow
def test_torchrun_predict_writes_what_one_process_writes(ddp_run, easy_patches, tmp_path):
    from pipeline.train.predict import predict

    base, _ = ddp_run
    _torchrun(["-m", "pipeline", "predict", "--model", str(base / "a"), "--patches", str(easy_patches),
               "--out", str(tmp_path / "two"), "--split", "test", "--device", "cpu"], cwd=tmp_path)
    predict(base / "a", easy_patches, tmp_path / "one", split="test", device="cpu")
    for name in ("seriesuids.csv", "predict_summary.json"):
        assert (tmp_path / "two" / name).read_text(encoding="utf-8") == (tmp_path / "one" / name).read_text(encoding="utf-8"), name
    for name in ("predictions.csv", "scored.csv"):  # same rows in the same order; probabilities to float
        two, one = (pd.read_csv(tmp_path / d / name) for d in ("two", "one"))  # round-off (other batches)
        pd.testing.assert_frame_equal(two.drop(columns="probability"), one.drop(columns="probability"))
        np.testing.assert_allclose(two["probability"], one["probability"], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_torchrun_segmenter_gathered_val_metrics_equal_one_process(easy_patches, tmp_path):
    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import load_model
    from pipeline.train.config import SegTrainConfig
    from pipeline.train.segment import _row_filter, segmenter_task
    from pipeline.train.stage import make_datasets

    seg = {"epochs": 1, "batch_size": 4, "max_train_samples": 16, "features": [32, 16, 16, 8, 8], "device": "cpu"}
    params = tmp_path / "params.yaml"
    params.write_text("train_seg:\n" + "".join(f"  {k}: {v}\n" for k, v in seg.items()))
    _torchrun(["-m", "pipeline", "train", "--task", "segmenter", "--patches", str(easy_patches),
               "--out", str(tmp_path / "seg"), "--live", str(tmp_path / "live"), "--params", str(params),
               "--quiet"], cwd=tmp_path)
    m = json.loads((tmp_path / "seg" / "metrics.json").read_text(encoding="utf-8"))
    cfg = SegTrainConfig(**{**seg, "features": tuple(seg["features"])})
    store = PatchStore(easy_patches)
    keep = _row_filter(store.index, cfg.neg_per_pos, cfg.seed)  # the val rows train_segmenter uses
    _, val_ds = make_datasets(store, cfg, "3d", crop=16, masks=True, row_filters=keep)
    assert m["n_val"] == len(val_ds)
    model, _ = load_model(tmp_path / "seg")
    loader = torch.utils.data.DataLoader(val_ds, batch_size=8)
    val = segmenter_task(cfg).evaluate(model, loader, torch.device("cpu"), None)
    for k in ("val_dice", "val_auc", "val_loss"):
        assert val[k] == pytest.approx(m[k], abs=1e-6), k
