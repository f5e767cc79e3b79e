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


def test_default_gain_is_the_documented_half():
    """No ``moe`` given: the term is weighted 0.5 (README "Training", Table 8 config 1)."""
    torch.manual_seed(0)
    batch = _batch()
    default = _model()
    assert not hasattr(default.args, "moe")
    unit = copy.deepcopy(default)
    unit.args.moe = 1.0
    with_default, with_one = default.loss(batch)[1]["moe_loss"], unit.loss(batch)[1]["moe_loss"]
    assert with_one > 0 and torch.isclose(with_default, 0.5 * with_one)


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


def test_a_write_killed_before_its_rename_leaves_the_old_file(tmp_path, monkeypatch):
    import os

    from yolo_master.engine.atomic import write_atomically

    best = tmp_path / "best.pt"
    write_atomically(best, b"old checkpoint")

    def killed(src, dst):  # the process dies between writing the new bytes and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(best, b"new checkpoint, never completed")
    assert best.read_bytes() == b"old checkpoint"  # the previous checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # and no temporary is left


def _trainer_saving(tmp_path, monkeypatch, shapes_yaml, write):
    """Our trainer whose parent ``save_model`` is replaced by ``write(trainer)`` (no training needed)."""
    from ultralytics.engine.trainer import BaseTrainer

    from yolo_master.engine import resume_state
    from yolo_master.engine.trainer import YOLOMasterDetectionTrainer

    monkeypatch.setattr(BaseTrainer, "save_model", write)
    monkeypatch.setattr(resume_state, "save", lambda trainer: None)
    overrides = {"model": "n.yaml", "data": str(shapes_yaml), "project": str(tmp_path), "name": "run"}
    trainer = YOLOMasterDetectionTrainer(overrides=overrides)
    trainer.wdir.mkdir(parents=True, exist_ok=True)
    return trainer


def test_checkpoints_are_staged_then_renamed_into_weights(tmp_path, monkeypatch, shapes_yaml):
    def write(trainer):  # what Ultralytics' save_model does: last, best, epochN through these attributes
        trainer.last.write_bytes(b"last")
        trainer.best.write_bytes(b"best")
        (trainer.wdir / "epoch3.pt").write_bytes(b"epoch 3")
        return True

    trainer = _trainer_saving(tmp_path, monkeypatch, shapes_yaml, write)
    wdir = trainer.wdir
    assert trainer.save_model() is True
    assert {p.name: p.read_bytes() for p in wdir.iterdir()} == {
        "last.pt": b"last",
        "best.pt": b"best",
        "epoch3.pt": b"epoch 3",
    }
    assert trainer.last == wdir / "last.pt" and trainer.wdir == wdir  # the trainer's paths are put back


def test_a_save_killed_midway_leaves_the_previous_checkpoints(tmp_path, monkeypatch, shapes_yaml):
    def write(trainer):
        trainer.last.write_bytes(b"half a checkp")
        raise KeyboardInterrupt  # killed before best.pt and before anything was renamed

    trainer = _trainer_saving(tmp_path, monkeypatch, shapes_yaml, write)
    (trainer.wdir / "last.pt").write_bytes(b"previous last")
    with pytest.raises(KeyboardInterrupt):
        trainer.save_model()
    assert {p.name: p.read_bytes() for p in trainer.wdir.iterdir()} == {"last.pt": b"previous last"}
