"""Ultralytics' opt-in safe checkpoint loading (``ULTRALYTICS_SAFE_LOAD=1``), taught our classes.

That loader is a ``weights_only`` unpickler with an allow-list of known classes; ours are not on it.
We add exactly the classes a YOLO-Master checkpoint can name: the task models, every routed block and
its parts, every registered router (so a router added to the registry loads with no other change),
and the import paths older checkpoints name. Anything else (e.g. a pickle that calls ``os.system``)
is still refused.
"""

from __future__ import annotations


def checkpoint_classes() -> dict[str, type]:
    """``{"module.Name" as a pickle names it: class}`` for everything a YOLO-Master checkpoint may hold."""
    from ..models import TASK_MODELS
    from ..models.legacy import MoECriterion
    from ..nn import BLOCKS, ROUTERS, ExpertBank, FFNMoE, MoEOptions
    from ..nn.block import Transient
    from ..nn.moe_ffn import FFNExpertBank
    from ..nn.released_experts import MLPExpertBank, PostNormExpertBank

    classes = [*TASK_MODELS.values(), *BLOCKS.values(), FFNMoE, Transient, MoEOptions]
    classes += [ExpertBank, PostNormExpertBank, MLPExpertBank, FFNExpertBank]
    classes += list(ROUTERS.values())
    names = {f"{c.__module__}.{c.__qualname__}": c for c in classes}
    names.update(  # where checkpoints written before the routers/ redesign found these classes
        {
            "yolo_master.nn.moe.Transient": Transient,
            "yolo_master.nn.routing.TopKRouter": ROUTERS["topk"],
            "yolo_master.models.moe_loss.MoECriterion": MoECriterion,
        }
    )
    return names


def allow_in_safe_load(tasks) -> None:
    """Add :func:`checkpoint_classes` to ``_SafeLoad``'s registry (private: checked at import, see ``__init__``)."""
    safe = tasks._SafeLoad
    if not safe.SUPPORTED:
        return
    with safe._lock:
        if safe._registry is None:
            safe._registry = safe._build()
        safe._registry.update(checkpoint_classes())
