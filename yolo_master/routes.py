"""``yolo-master routes``: which experts every ES-MoE layer chose for each image, as a heat map.

One row per image, one column per (layer, expert); the colour is the routing weight the expert got
(0 where it was not chosen; grey where a layer has fewer experts than the widest one). Saved as
``routes.png`` with the numbers in ``routes.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .nn import named_moe_layers


def image_files(source) -> list[Path]:
    """Image files in ``source`` (a file or a folder, sorted)."""
    from ultralytics.data.utils import IMG_FORMATS

    path = Path(source)
    files = sorted(p for p in path.iterdir() if p.suffix[1:].lower() in IMG_FORMATS) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no images found in '{source}'")
    return files


def collect_routes(model, source, imgsz: int = 640) -> tuple[list[str], list[str], np.ndarray]:
    """Route every image of ``source`` through ``model`` (a ``YOLOMaster``), letterboxed to ``imgsz``.

    Returns image names, layer names and the routing weights, shape ``(images, layers, max E)``.
    """
    from copy import deepcopy

    import cv2
    import torch
    from ultralytics.data.augment import LetterBox

    net = deepcopy(model.model).float().eval()  # the caller's model keeps its dtype and mode
    layers = named_moe_layers(net)
    if not layers:
        raise ValueError("this model has no ES-MoE layers: there is no routing to show")
    e_max = max(m.num_experts for m in layers.values())
    letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False)
    names, rows = [], []
    from ultralytics.utils import LOGGER

    for file in image_files(source):
        img = cv2.imread(str(file))
        if img is None:  # as predict does: say so and go on
            LOGGER.warning(f"routes: skipping '{file}', which is not a readable image")
            continue
        x = letterbox(image=img)[..., ::-1].transpose(2, 0, 1) / 255.0
        with torch.inference_mode():
            net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
        row = np.full((len(layers), e_max), np.nan, np.float32)
        for i, layer in enumerate(layers.values()):
            dense = layer.last_routing.dense[0].float().cpu().numpy()
            row[i, : dense.shape[0]] = dense
        names.append(file.name)
        rows.append(row)
    if not rows:
        raise ValueError(f"no readable image in '{source}'")
    return names, list(layers), np.stack(rows)


def render_routes(names: list[str], layers: list[str], weights: np.ndarray, out_dir: Path) -> Path:
    """Write ``routes.png`` (heat map) and ``routes.csv`` under ``out_dir``; return the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    n, n_layers, e_max = weights.shape
    grid = weights.reshape(n, n_layers * e_max)
    fig, ax = plt.subplots(figsize=(1.2 + 0.35 * grid.shape[1], 1.2 + 0.28 * n), tight_layout=True)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for b in range(1, n_layers):
        ax.axvline(b * e_max - 0.5, color="white", lw=2)
    ax.set_xticks(range(grid.shape[1]), [f"{layer}:{e}" for layer in layers for e in range(e_max)], rotation=90)
    ax.set_yticks(range(n), names if n <= 60 else [""] * n)
    ax.set(xlabel="ES-MoE layer : expert", title="routing weight per image")
    fig.colorbar(im, ax=ax, fraction=0.03)
    png = out_dir / "routes.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    with (out_dir / "routes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *(f"layer{layer}_expert{e}" for layer in layers for e in range(e_max))])
        for name, row in zip(names, grid):
            writer.writerow([name, *("" if np.isnan(v) else f"{v:.4f}" for v in row)])
    return png


def routes(model, source, imgsz: int = 640, project: str | None = None, name: str = "routes") -> Path:
    """Collect and render the routes of ``source``; returns the PNG path (under ``runs/<task>/routes``)."""
    from ultralytics.utils import RUNS_DIR
    from ultralytics.utils.files import increment_path

    names, layers, weights = collect_routes(model, source, imgsz)
    out_dir = increment_path(Path(project or RUNS_DIR / model.task) / name)
    return render_routes(names, layers, weights, out_dir)
