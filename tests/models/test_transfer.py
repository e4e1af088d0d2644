"""Transfer strategies: frozen means bit-identical, stage schedules, LRs, auto matrix."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import (
    ModelConfig,
    TransferConfig,
    apply_strategy,
    build_classifier,
    needs_new_optimizer,
    resolve_strategy,
    set_train_mode,
    trainable_summary,
)

torch.set_num_threads(2)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return build_classifier(ModelConfig(encoder="efficientnet_lite0", weights="none", head_hidden=16))


def _trainable(model):
    return [any(p.requires_grad for p in s.parameters()) for s in model.stages]


def _steps(model, groups, n=3):
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-4)
    set_train_mode(model)
    for _ in range(n):
        x = torch.randint(-1000, 400, (4, 3, 32, 32)).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), torch.tensor([0.0, 1, 0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_linear_probe_leaves_encoder_bit_identical(model):
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = [p.clone() for p in model.head.parameters()]
    groups = apply_strategy(model, "linear_probe", TransferConfig(), epoch=0)
    assert [g["name"] for g in groups] == ["head"]
    _steps(model, groups)
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights AND BN buffers
    assert any(not torch.equal(a, b) for a, b in zip(head_before, model.head.parameters()))
    assert trainable_summary(model)["trainable_params"] == sum(p.numel() for p in model.head.parameters())


def test_partial_unfreezes_last_n_stages(model):
    for n in (1, 2, 3):
        groups = apply_strategy(model, "partial", TransferConfig(unfreeze_stages=n), epoch=0)
        assert _trainable(model) == [False] * (5 - n) + [True] * n
        assert [g["name"] for g in groups] == ["head"] + [f"stage{i}" for i in range(4, 4 - n, -1)]
    before = {k: v.clone() for k, v in model.stages[0].state_dict().items()}
    _steps(model, apply_strategy(model, "partial", TransferConfig(unfreeze_stages=2), epoch=0))
    assert all(torch.equal(v, model.stages[0].state_dict()[k]) for k, v in before.items())
    with pytest.raises(ConfigError, match="unfreeze_stages"):
        apply_strategy(model, "partial", TransferConfig(unfreeze_stages=9), epoch=0)


def test_progressive_schedule(model):
    cfg = TransferConfig(progressive_epochs_per_stage=2)
    expected = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 9: 4, 10: 5, 30: 5}
    for epoch, n in expected.items():
        apply_strategy(model, "progressive", cfg, epoch)
        assert _trainable(model) == [False] * (5 - n) + [True] * n, epoch
    changes = [e for e in range(14) if needs_new_optimizer("progressive", e, cfg, 5)]
    assert changes == [0, 2, 4, 6, 8, 10]
    assert [e for e in range(5) if needs_new_optimizer("full", e, cfg)] == [0]


def test_discriminative_lrs(model):
    cfg = TransferConfig(lr=1e-2, encoder_lr_mult=0.1, layer_decay=0.5)
    groups = apply_strategy(model, "full", cfg, epoch=0)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == 1e-2
    assert lrs["stage4"] == pytest.approx(1e-3) and lrs["stage3"] == pytest.approx(5e-4)
    assert lrs["stage0"] == pytest.approx(1e-3 * 0.5 ** 4)
    ordered = [lrs["head"]] + [lrs[f"stage{i}"] for i in range(4, -1, -1)]
    assert ordered == sorted(ordered, reverse=True)
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(model.parameters()))
    scratch = apply_strategy(model, "scratch", cfg, epoch=0)
    assert {g["lr"] for g in scratch} == {1e-2}


def test_scratch_needs_random_weights():
    pre = build_classifier(ModelConfig(encoder="efficientnet_lite0", weights="pretrained"))
    with pytest.raises(ConfigError, match="weights: none"):
        apply_strategy(pre, "scratch", TransferConfig(), epoch=0)


def test_auto_matrix_and_invalid():
    assert resolve_strategy("auto", 200, "medicalnet")[0] == "linear_probe"
    assert resolve_strategy("auto", 200, "imagenet")[0] == "partial"
    assert resolve_strategy("auto", 5000, "medicalnet")[0] == "full"
    s, reason = resolve_strategy("auto", 5000, "imagenet")
    assert s == "full" and "dissimilar" in reason and "5000" in reason
    assert resolve_strategy("auto", 200, "medicalnet", pretrained=False)[0] == "scratch"
    assert resolve_strategy("partial", 10, "imagenet") == ("partial", "strategy 'partial' set explicitly")
    with pytest.raises(ConfigError, match="linear_probe, partial, full, progressive, scratch"):
        resolve_strategy("freeze", 10, "imagenet")
    with pytest.raises(ConfigError, match="resolve_strategy"):
        apply_strategy(None, "auto", TransferConfig(), 0)
