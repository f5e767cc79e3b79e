"""Detection trainer: Ultralytics' ``DetectionTrainer`` with our model class and the ``moe`` gain."""

from __future__ import annotations

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, RANK

from ..models import YOLOMasterDetectionModel
from .hyp import apply_extra_hyp, pop_extra_hyp, without_extra_hyp


class MoETrainerMixin:
    """Accepts our hyperparameters (``moe``) on top of Ultralytics' and keeps them off the validator."""

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks=None) -> None:
        overrides = dict(overrides or {})
        given = pop_extra_hyp(overrides)
        super().__init__(cfg, overrides, _callbacks)
        apply_extra_hyp(self.args, given)

    def get_validator(self):
        with without_extra_hyp(self.args):
            return super().get_validator()


class YOLOMasterDetectionTrainer(MoETrainerMixin, DetectionTrainer):
    """Trains :class:`YOLOMasterDetectionModel`; logs ``moe_loss`` beside box/cls/dfl."""

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        verbose = verbose and RANK == -1
        model = YOLOMasterDetectionModel(cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose)
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        return model
