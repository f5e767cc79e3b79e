"""The MoE term in the task loss: weighted by ``moe``, logged as ``moe_loss``, gradient to the gates."""

from __future__ import annotations

import copy

import pytest
import torch

from yolo_master import ESMoE, YOLOMaster
from yolo_master.models.moe_loss import DEFAULT_MOE_GAIN


def _batch(n=2, size=64):
    return {
        "img": torch.rand(n, 3, size, size),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.4, 0.4, 0.2, 0.5]]),
    }


def _model(moe=None):
    """A model with hyperparameters as the trainer sets them (a namespace, ``moe`` included if given)."""
    from ultralytics.cfg import get_cfg

    model = YOLOMaster("n.yaml").model
    model.args = get_cfg()
    if moe is not None:
        model.args.moe = moe
    return model.train()


def test_loss_has_moe_item_and_gradient_reaches_every_gate():
    model = _model(moe=1.5)
    loss, items = model.loss(_batch())
    assert set(items) >= {"box_loss", "cls_loss", "dfl_loss", "moe_loss"}
    assert items["moe_loss"] > 0
    loss.backward()
    gates = [m.router.logits.weight.grad for m in model.modules() if isinstance(m, ESMoE)]
    assert len(gates) == 3 and all(g is not None and g.abs().sum() > 0 for g in gates)


def test_moe_gain_scales_the_term_and_zero_removes_it():
    torch.manual_seed(0)
    batch = _batch()
    base = _model(moe=1.0)
    doubled = copy.deepcopy(base)
    doubled.args.moe = 2.0
    off = copy.deepcopy(base)
    off.args.moe = 0.0
    items = [m.loss(batch)[1]["moe_loss"] for m in (base, doubled, off)]
    assert torch.isclose(items[1], 2 * items[0]) and items[2] == 0
    total_base, total_off = base.loss(batch)[0], off.loss(batch)[0]
    assert torch.isclose(total_base - total_off, items[0] * 2, rtol=1e-4)  # term x batch size 2


def test_default_gain_is_documented_value():
    model = _model()
    assert not hasattr(model.args, "moe")
    assert model.loss(_batch())[1]["moe_loss"] > 0
    assert DEFAULT_MOE_GAIN == 0.5


def test_model_deep_copies_after_a_training_forward():
    model = _model()
    model(torch.rand(2, 3, 64, 64))  # pending aux losses with autograd history
    clone = copy.deepcopy(model)  # what Ultralytics' EMA does
    assert all(m.take_aux_loss() is None for m in clone.modules() if isinstance(m, ESMoE))


def test_moe_gain_precedence_given_then_resumed_then_default():
    from types import SimpleNamespace

    from yolo_master.engine.hyp import apply_extra_hyp, pop_extra_hyp

    resumed = SimpleNamespace(moe=1.5)  # args restored from a checkpoint on resume=True
    apply_extra_hyp(resumed, pop_extra_hyp({}))
    assert resumed.moe == 1.5
    overrides = {"moe": "1.0", "epochs": 3}
    given = pop_extra_hyp(overrides)
    assert overrides == {"epochs": 3}  # Ultralytics never sees the key
    apply_extra_hyp(resumed, given)
    assert resumed.moe == 1.0
    fresh = SimpleNamespace()
    apply_extra_hyp(fresh, {})
    assert fresh.moe == DEFAULT_MOE_GAIN


def test_paper_loss_configurations_by_hyperparameters(shapes_yaml):
    """Table 8: DFL on/off x MoE 0.5 / 1.0 / 1.5, set with dfl= and moe= alone."""
    from conftest import real_batch
    from ultralytics.cfg import get_cfg

    batch = real_batch("detect", shapes_yaml)
    batch["img"] = batch["img"].float() / 255
    torch.manual_seed(0)
    model = YOLOMaster("n.yaml").model.train()
    items = {}
    for dfl, moe in ((1.5, 0.5), (0.0, 0.5), (1.5, 1.0), (1.5, 1.5), (0.0, 1.5)):
        model.args = get_cfg(overrides={"dfl": dfl})
        model.args.moe = moe
        model.criterion = None
        items[dfl, moe] = model.loss(batch)[1]
    assert items[0.0, 1.5]["dfl_loss"] == 0 and items[1.5, 1.5]["dfl_loss"] > 0
    assert torch.isclose(items[1.5, 1.5]["moe_loss"], 3 * items[1.5, 0.5]["moe_loss"])


def test_head_without_the_distribution(tmp_path, shapes_yaml):
    """``reg_max: 1`` in the model YAML: a head that regresses boxes directly, no DFL term at all."""
    from conftest import real_batch
    from ultralytics.cfg import get_cfg

    from yolo_master.zoo import load_model_yaml

    d = load_model_yaml("n.yaml")
    d["reg_max"] = 1
    from yolo_master.models import YOLOMasterDetectionModel

    model = YOLOMasterDetectionModel(d, verbose=False).train()
    model.args = get_cfg()
    batch = real_batch("detect", shapes_yaml)
    batch["img"] = batch["img"].float() / 255
    loss, items = model.loss(batch)
    assert model.model[-1].reg_max == 1
    assert "dfl_loss" not in items and items["moe_loss"] > 0  # Ultralytics swaps DFL for an L1 box term


def test_checkpoints_are_replaced_atomically(tmp_path, monkeypatch, shapes_yaml):
    import os

    from yolo_master.engine.atomic import AtomicPath
    from yolo_master.engine.trainer import YOLOMasterDetectionTrainer

    best = AtomicPath(tmp_path / "weights" / "best.pt")
    best.parent.mkdir()
    best.write_bytes(b"old checkpoint")
    assert best.read_bytes() == b"old checkpoint"

    def killed(src, dst):  # the process dies between writing the new bytes and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        best.write_bytes(b"new checkpoint, never completed")
    assert best.read_bytes() == b"old checkpoint"  # the previous checkpoint is intact
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.pt"]  # and no temporary is left
    assert isinstance(best.parent / "epoch3.pt", AtomicPath)
    monkeypatch.undo()
    overrides = {"model": "n.yaml", "data": str(shapes_yaml), "project": str(tmp_path)}
    trainer = YOLOMasterDetectionTrainer(overrides=overrides)
    assert all(isinstance(p, AtomicPath) for p in (trainer.last, trainer.best, trainer.wdir / "epoch1.pt"))
