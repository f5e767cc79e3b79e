"""Trainers: Ultralytics' task trainers with our models, the ``moe`` gain and routing statistics."""

from __future__ import annotations

from pathlib import Path

from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG
from ultralytics.utils.torch_utils import unwrap_model

from ..models import promote
from ..zoo import load_model_yaml
from . import resume_state
from .atomic import AtomicPath
from .balancing import update_selection_biases
from .hyp import apply_extra_hyp, pop_extra_hyp, without_extra_hyp
from .routing_stats import RoutingStats


class MoETrainerMixin:
    """What every YOLO-Master trainer adds to its Ultralytics parent.

    - ``moe`` (and future extra hyperparameters) accepted, validated, kept off the validator;
    - the model Ultralytics builds for the task promoted to our subclass (adds the MoE loss);
    - per-layer routing statistics: ``routing.csv``, ``routing.png`` and a collapse warning;
    - checkpoints written atomically (see ``atomic.py``);
    - exact resume: per-epoch reseeding and a full-precision ``resume_state.pt`` (see ``resume_state.py``).
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks=None) -> None:
        overrides = dict(overrides or {})
        given = pop_extra_hyp(overrides)
        super().__init__(cfg, overrides, _callbacks)
        apply_extra_hyp(self.args, given)
        self.wdir, self.last, self.best = AtomicPath(self.wdir), AtomicPath(self.last), AtomicPath(self.best)
        self.routing_stats = RoutingStats()
        self.routing_stats.attach(self)
        self.add_callback("on_train_epoch_start", resume_state.reseed_epoch)

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        if isinstance(cfg, (str, Path)):  # a zoo name reaches here in DDP workers and resumed runs
            cfg = load_model_yaml(cfg)
        return promote(super().get_model(cfg=cfg, weights=weights, verbose=verbose))

    def get_validator(self):
        with without_extra_hyp(self.args):
            return super().get_validator()

    def save_model(self):
        saved = super().save_model()
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
        """Ultralytics' step, then the loss-free balancing bias update (once per optimizer step)."""
        super().optimizer_step()
        update_selection_biases(unwrap_model(self.model), self.ema.ema if self.ema else None, self.epoch / self.epochs)


class YOLOMasterDetectionTrainer(MoETrainerMixin, DetectionTrainer):
    """Detection: box / cls / dfl / moe losses."""


class YOLOMasterSegmentationTrainer(MoETrainerMixin, SegmentationTrainer):
    """Instance segmentation: box / seg / cls / dfl / moe losses."""


class YOLOMasterPoseTrainer(MoETrainerMixin, PoseTrainer):
    """Pose: box / pose / kobj / cls / dfl / moe losses."""


class YOLOMasterOBBTrainer(MoETrainerMixin, OBBTrainer):
    """Oriented boxes: box / cls / dfl / angle / moe losses."""


class YOLOMasterClassificationTrainer(MoETrainerMixin, ClassificationTrainer):
    """Classification: cross-entropy + moe."""
