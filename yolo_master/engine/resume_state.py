"""Exact resume: a run killed mid-epoch and resumed reaches the same weights as one never interrupted.

Ultralytics' ``last.pt`` is enough to carry on training, not to carry on *the same* training:

- it keeps only the EMA, rounded to FP16 (``"model": None``), and a resumed run starts its raw weights
  from that rounded EMA; the optimizer state is rounded to FP16 too;
- no random state is saved, and saving it would not help: the train loader draws from its generator
  lazily (a new iterator takes a worker seed from it; the sampler takes each epoch's permutation at
  that epoch's first batch, plus an unused one when it runs out), and the dataset's mosaic buffer
  carries images over from one epoch to the next, so a resumed run, with a new iterator and an empty
  buffer, would draw different batches and augmentations from the same saved state.

So, in every run, resumed or not:

1. at the start of each epoch, python, numpy and torch are reseeded from (seed, rank, epoch), and so
   is the train loader's generator; the loader's iterator (and its workers) is rebuilt and the mosaic
   buffer emptied. Epoch N's order, augmentations and worker seeds depend only on the seed and N.
2. after each ``last.pt``, ``resume_state.pt`` is written atomically beside it: every parameter and
   buffer of the model and of the EMA (router ``selection_bias`` included) and the optimizer state,
   in full precision, tagged with the epoch and EMA update count of the ``last.pt`` it belongs to.
   Resume loads it over what Ultralytics restored. Missing (a stock Ultralytics checkpoint) or stale
   (the kill fell between the two writes), resume warns in one line and goes on as Ultralytics does.

Bit-exact when the optimizer steps every batch (``nbs <= batch``): with gradient accumulation,
Ultralytics' loop drops the gradients accumulated across an epoch boundary when it resumes.
"""

from __future__ import annotations

import io
import random
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from torch import nn
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from ..integration.runtime import reset_epoch_data
from .atomic import write_atomically

FILENAME = "resume_state.pt"  # not "last*.pt": Ultralytics' `resume=True` picks the newest last*.pt


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name (``state_dict`` leaves out non-persistent buffers)."""
    return dict(chain(model.named_parameters(), model.named_buffers()))


def reseed_epoch(trainer) -> None:
    """``on_train_epoch_start``: make this epoch's batches and augmentations a function of (seed, epoch)."""
    seed = int(np.random.SeedSequence([trainer.args.seed % 2**32, max(RANK, 0), trainer.epoch]).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    loader = trainer.train_loader
    if isinstance(getattr(loader, "generator", None), torch.Generator):
        loader.generator.manual_seed(seed)  # the shuffle order and the worker seeds
    reset_epoch_data(loader)  # a new iterator from the generator just seeded, an empty mosaic buffer


def save(trainer) -> None:
    """Write ``resume_state.pt`` beside ``trainer.last``, atomically."""
    state = {
        "epoch": trainer.epoch,
        "updates": trainer.ema.updates,
        "model": {k: v.detach().cpu() for k, v in tensors(unwrap_model(trainer.model)).items()},
        "ema": {k: v.detach().cpu() for k, v in tensors(trainer.ema.ema).items()},
        "optimizer": trainer.optimizer.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(Path(trainer.last).with_name(FILENAME), buffer.getvalue())


def load(trainer, ckpt: dict) -> dict | None:
    """The ``resume_state.pt`` that belongs to the checkpoint being resumed, else None with a warning."""
    path = Path(trainer.args.resume).with_name(FILENAME)
    why = None
    if not path.exists():
        why = f"no {FILENAME} beside it"
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # empty, truncated, another file under this name
            state, why = None, f"{path} is damaged ({type(e).__name__}), ignored"
    if why is None:
        if not isinstance(state, dict) or not {"epoch", "updates", "model", "ema", "optimizer"} <= set(state):
            why = f"{path} is not a resume state, ignored"
        elif (state["epoch"], state["updates"]) != (ckpt.get("epoch"), ckpt.get("updates")):
            why = f"{FILENAME} is from another epoch"
        elif state["model"].keys() != tensors(unwrap_model(trainer.model)).keys():
            why = f"{FILENAME} is for another model"
    if why:
        LOGGER.warning(f"{trainer.args.resume}: {why}; resuming from its FP16 EMA as Ultralytics does (not exact)")
        return None
    return state


@torch.no_grad()
def restore(trainer, state: dict) -> None:
    """Put the saved model and EMA tensors back (Ultralytics restored both from the FP16 EMA)."""
    for model, saved in ((unwrap_model(trainer.model), state["model"]), (trainer.ema.ema, state["ema"])):
        for name, t in tensors(model).items():
            t.copy_(saved[name])
