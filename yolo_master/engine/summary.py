"""What a finished training run learned and where it left its files: the lines printed after ``train``.

Ultralytics ends a run with its validation table and "Results saved to ..."; a newcomer still has to
find which number matters, which file to use next and what to run with it. These lines say so.
"""

from __future__ import annotations

from pathlib import Path

# results keys -> the names printed, per task family (the first is the headline metric)
_METRICS = (
    ("metrics/mAP50(M)", "mask mAP50"),
    ("metrics/mAP50-95(M)", "mask mAP50-95"),
    ("metrics/mAP50(P)", "pose mAP50"),
    ("metrics/mAP50(B)", "mAP50"),
    ("metrics/mAP50-95(B)", "mAP50-95"),
    ("metrics/accuracy_top1", "top-1"),
    ("metrics/accuracy_top5", "top-5"),
)


def training_summary(trainer) -> str:
    """Lines naming the final validation metrics, the weights, the plots and a ``predict`` to try."""
    save_dir = Path(trainer.save_dir)
    metrics = getattr(trainer, "metrics", None) or {}
    learned = ", ".join(f"{name} {metrics[key]:.3f}" for key, name in _METRICS if key in metrics)
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    val = (getattr(trainer, "data", None) or {}).get("val")
    lines = [
        f"Learned: {learned or 'no validation metrics (val=False)'} on the validation split, with {best.name}",
        f"Weights: {best} (last.pt beside it resumes with resume=True)",
        f"Plots, results.csv and validation images with boxes: {save_dir}",
    ]
    if val:
        lines.append(f"Try it:  yolo-master predict model={best} source={val}")
    return "\n".join(lines)
