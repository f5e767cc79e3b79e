"""Trainers: Ultralytics' task trainers with our task models, the ``moe`` gain and routing statistics."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, RANK
from ultralytics.utils.torch_utils import unwrap_model

from ..integration.runtime import hidden_keys
from ..models import TASK_MODELS
from ..zoo import load_model_yaml
from . import resume_state
from .atomic import replace_atomically
from .hyp import EXTRA_HYP, apply_extra_hyp, pop_extra_hyp
from .router_updates import step_routers
from .routing_stats import RoutingStats
from .run_lock import RunLock

STAGING = ".saving"  # hidden: Ultralytics' `resume=True` search (a glob for last*.pt) skips it


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (``run/weights/last.pt`` -> ``run``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "weights" else checkpoint.parent


def run_folder(cfg, overrides: dict) -> Path | None:
    """The existing run folder a training will write into, when that is known before it starts: the folder
    of the checkpoint a resume continues, or ``project/name`` with ``exist_ok=True``; else ``None``."""
    from ultralytics.cfg import get_cfg, get_save_dir

    resume = overrides.get("resume")
    if resume:
        last = Path(str(resume if isinstance(resume, (str, Path)) else overrides.get("model", "")))
        if last.suffix != ".pt" or not last.is_file():
            return None
        return Path(overrides.get("save_dir") or run_dir_of(last))
    try:
        args = get_cfg(cfg, overrides)
    except Exception:  # Ultralytics reports bad overrides itself, in its own words
        return None
    return Path(get_save_dir(args)) if args.exist_ok or getattr(args, "save_dir", None) else None


class MoETrainerMixin:
    """What every YOLO-Master trainer adds to its Ultralytics parent.

    - ``moe`` (and future extra hyperparameters) accepted, validated, kept off the validator;
    - our task model built for the task (its loss adds the MoE term);
    - per-layer routing statistics: ``routing.csv``, ``routing.png`` and a collapse warning;
    - checkpoints written atomically: staged in a hidden folder, then renamed into ``weights/``;
    - exact resume: per-epoch reseeding and a full-precision ``resume_state.pt`` (see ``resume_state.py``);
    - every router's per-step update (loss-free balancing) after each optimizer step.
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks=None) -> None:
        overrides = dict(overrides or {})
        given = pop_extra_hyp(overrides)
        # An existing run folder is locked before Ultralytics' setup touches it (it rewrites args.yaml and
        # deletes results.csv); a new, incremented one once it exists.
        expected = run_folder(cfg, overrides) if RANK in {-1, 0} else None
        self.run_lock = RunLock(expected) if expected else None
        if self.run_lock:
            self.run_lock.acquire()
        super().__init__(cfg, overrides, _callbacks)
        apply_extra_hyp(self.args, given)
        if RANK in {-1, 0} and (self.run_lock is None or Path(expected).resolve() != Path(self.save_dir).resolve()):
            if self.run_lock:
                self.run_lock.release()
            self.run_lock = RunLock(self.save_dir)
            self.run_lock.acquire()
        if self.run_lock:
            self.add_callback("on_train_end", self.run_lock.release)
        self.routing_stats = RoutingStats()
        self.routing_stats.attach(self)
        self.add_callback("on_train_epoch_start", resume_state.reseed_epoch)

    def check_resume(self, overrides):
        """Ultralytics' resume, writing where the checkpoint lives: a copied run resumes into the copy."""
        super().check_resume(overrides)
        if not self.resume:
            return
        from ultralytics.utils import LOGGER

        last = Path(self.args.resume).resolve()
        run_dir = run_dir_of(last)
        recorded = getattr(self.args, "save_dir", None)
        if "save_dir" not in overrides and recorded and Path(recorded).resolve() != run_dir:
            LOGGER.warning(f"{last} was written by the run in {recorded}; resuming into {run_dir}, where it lives")
            self.args.save_dir = str(run_dir)

    def task_model_kwargs(self) -> dict:
        """Task-specific constructor arguments (pose: the keypoint shape)."""
        return {}

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """Our task model, built as the parent builds its stock one, ``weights`` loaded into it."""
        if isinstance(cfg, (str, Path)):  # a zoo name reaches here in DDP workers and resumed runs
            cfg = load_model_yaml(cfg)
        kwargs = {"nc": self.data["nc"], "ch": self.data["channels"], **self.task_model_kwargs()}
        model = TASK_MODELS[self.args.task](cfg, verbose=verbose and RANK == -1, **kwargs)
        if hasattr(self, "set_model_names_for_load"):  # detection family: class names before loading weights
            model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        return model

    def get_validator(self):
        with hidden_keys(self.args, EXTRA_HYP):
            return super().get_validator()

    def save_model(self):
        """Ultralytics' checkpoints, written into a hidden staging folder, then each renamed into place."""
        wdir, last, best = self.wdir, self.last, self.best
        staging = wdir / STAGING
        shutil.rmtree(staging, ignore_errors=True)  # left by a run killed mid-save
        staging.mkdir(parents=True)
        self.wdir, self.last, self.best = staging, staging / last.name, staging / best.name
        try:
            saved = super().save_model()
            for file in sorted(staging.iterdir()):
                replace_atomically(file, wdir / file.name)
        finally:
            self.wdir, self.last, self.best = wdir, last, best
            shutil.rmtree(staging, ignore_errors=True)
        resume_state.save(self)
        return saved

    def resume_training(self, ckpt):
        """Ultralytics' resume, then the full-precision weights, EMA and optimizer of ``resume_state.pt``."""
        state = resume_state.load(self, ckpt) if ckpt is not None and self.resume else None
        if state:
            ckpt = {**ckpt, "optimizer": state["optimizer"]}
        super().resume_training(ckpt)
        if state:
            resume_state.restore(self, state)

    def optimizer_step(self):
        """Ultralytics' step, then every router's update (loss-free balancing) and its EMA copy."""
        super().optimizer_step()
        step_routers(unwrap_model(self.model), self.ema.ema if self.ema else None, self.epoch / self.epochs)


class YOLOMasterDetectionTrainer(MoETrainerMixin, DetectionTrainer):
    """Detection: box / cls / dfl / moe losses."""


class YOLOMasterSegmentationTrainer(MoETrainerMixin, SegmentationTrainer):
    """Instance segmentation: box / seg / cls / dfl / moe losses."""


class YOLOMasterPoseTrainer(MoETrainerMixin, PoseTrainer):
    """Pose: box / pose / kobj / cls / dfl / moe losses."""

    def task_model_kwargs(self) -> dict:
        return {"data_kpt_shape": self.data["kpt_shape"]}


class YOLOMasterOBBTrainer(MoETrainerMixin, OBBTrainer):
    """Oriented boxes: box / cls / dfl / angle / moe losses."""


class YOLOMasterClassificationTrainer(MoETrainerMixin, ClassificationTrainer):
    """Classification: cross-entropy + moe."""

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """Our classifier, prepared for training the way Ultralytics' classification trainer prepares its own."""
        model = super().get_model(cfg, weights, verbose)
        for m in model.modules():
            if self.args.pretrained is False and not self.resume and hasattr(m, "reset_parameters"):
                m.reset_parameters()
            if isinstance(m, torch.nn.Dropout) and self.args.dropout:
                m.p = self.args.dropout
        for p in model.parameters():
            p.requires_grad = True
        return model
