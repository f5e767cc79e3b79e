"""Model-zoo name resolution: ``'n.yaml'`` / ``'yolo-master-n'`` -> the installed YAML at scale ``n``.

The zoo YAMLs live in the top-level ``cfg/`` folder of the repository and are installed as the
``yolo_master.cfg`` package, so they resolve from any working directory.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml

SCALES = "nsmlx"
FAMILIES = {  # name prefix -> family YAML (each with a `scales:` table)
    "": "detect/yolo-master.yaml",
    "seg": "segment/yolo-master-seg.yaml",
    "cls": "classify/yolo-master-cls.yaml",
    "pose": "pose/yolo-master-pose.yaml",
    "obb": "obb/yolo-master-obb.yaml",
    # the official releases' architectures (github Tencent/YOLO-Master), for their checkpoints
    "esmoe": "official/yolo-master-esmoe.yaml",
    "esmoe-seg": "official/yolo-master-esmoe-seg.yaml",
    "esmoe-cls": "official/yolo-master-esmoe-cls.yaml",
    "v0.1": "official/yolo-master-v0.1.yaml",
    "v0.1-seg": "official/yolo-master-v0.1-seg.yaml",
    "himoe": "detect/yolo-master-himoe.yaml",  # hierarchical routing (README "Routing options")
    # the paper's placement ablation (Table 5): no ES-MoE, neck only, backbone + neck (the default is backbone)
    "nomoe": "detect/yolo-master-nomoe.yaml",
    "neck": "detect/yolo-master-neck.yaml",
    "full": "detect/yolo-master-full.yaml",
}
# "[yolo-master-][family-]scale"; a user's own YAML file may have any prefix ("my_data2-s.yaml")
_NAME = re.compile(rf"^(?:yolo-master-)?(?:(?P<family>[a-z0-9_.-]+)-)?(?P<scale>[{SCALES}])$")


def cfg_dir() -> Path:
    """The installed ``cfg/`` folder."""
    return Path(str(resources.files("yolo_master.cfg")))


def zoo_names() -> list[str]:
    """Every model name the zoo accepts, long form."""
    return [f"yolo-master-{f + '-' if f else ''}{s}.yaml" for f in FAMILIES for s in SCALES]


def _match(name: str | Path):
    """The name's family and scale (``None`` for a family named without one, e.g. ``yolo-master-himoe.yaml``)."""
    path = Path(name)
    stem = path.stem if path.suffix in {".yaml", ".yml"} else path.name
    m = _NAME.match(stem)
    if m:
        return m["family"] or "", m["scale"]
    family = stem.removeprefix("yolo-master-")
    return (family, None) if stem.startswith("yolo-master-") and family in FAMILIES else None


def is_zoo_name(name: str | Path) -> bool:
    """True for a zoo name such as ``n``, ``seg-s.yaml``, ``v0.1-n`` or ``yolo-master-himoe.yaml``."""
    found = _match(name)
    return found is not None and Path(name).parent == Path(".") and found[0] in FAMILIES


def find_model_yaml(name: str | Path) -> tuple[Path, str | None, str]:
    """Return ``(yaml path, scale or None, display name)`` for a zoo name or an existing YAML file.

    Raises:
        FileNotFoundError: one line listing the valid names when ``name`` is neither.
    """
    path = Path(name)
    found = _match(name)
    if path.is_file():
        return path, (found[1] if found else None), str(path)
    if is_zoo_name(name):
        family, scale = found
        display = f"yolo-master-{family + '-' if family else ''}{scale or ''}".rstrip("-") + ".yaml"
        return cfg_dir() / FAMILIES[family], scale, display
    raise FileNotFoundError(
        f"unknown model '{name}': not a file and not a zoo name; valid names: {', '.join(zoo_names())} "
        "(short forms like 'n.yaml' or 'seg-n.yaml' work too)"
    )


def load_model_yaml(name: str | Path) -> dict:
    """Load a model YAML by zoo name or path, with ``scale`` set from the name when it has one."""
    path, scale, display = find_model_yaml(name)
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as e:
        raise ValueError(f"cannot read model YAML {path}: {' '.join(str(e).split())}") from None
    if not isinstance(d, dict):
        raise ValueError(f"model YAML {path} must be a mapping with 'backbone' and 'head' lists")
    from .yaml_check import check_model_dict

    check_model_dict(d, source=f"model YAML {path.name}")
    scales = d.get("scales") or {}
    if scale and scales and scale not in scales:
        raise ValueError(f"model YAML {path} has no scale '{scale}' (it defines {', '.join(scales)})")
    guessed = not (scale or d.get("scale")) and len(scales) > 1
    d["scale"] = scale or d.get("scale") or (next(iter(scales)) if scales else "")
    if guessed:
        from ultralytics.utils import LOGGER

        LOGGER.warning(
            f"{path.name} names no scale: building its first one, '{d['scale']}' (of {', '.join(scales)}); "
            f"end the file name with -n/-s/-m/-l/-x or add 'scale: n' to the YAML"
        )
    d["yaml_file"] = display
    return d
