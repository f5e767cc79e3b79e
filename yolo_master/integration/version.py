"""The Ultralytics versions YOLO-Master is tested against.

Registration wraps ``ultralytics.nn.tasks.parse_model`` and relies on how it infers channels and on
the criterion returning a dict of loss items (8.4.x). Another version may build wrong models without
failing, so an untested one stops at import with a clear message.
"""

from __future__ import annotations

import os

TESTED = ((8, 4, 180), (8, 5, 0))  # [low, high): keep in step with pyproject.toml


def _parse(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_ultralytics_version(version: str | None = None) -> None:
    """Raise ``ImportError`` naming the supported range when Ultralytics is outside it.

    Set ``YOLO_MASTER_SKIP_VERSION_CHECK=1`` to try an untested version anyway.
    """
    if os.environ.get("YOLO_MASTER_SKIP_VERSION_CHECK", "").lower() in {"1", "true", "yes"}:
        return
    if version is None:
        import ultralytics

        version = ultralytics.__version__
    low, high = TESTED
    if not low <= _parse(version) < high:
        lo, hi = (".".join(map(str, v)) for v in TESTED)
        raise ImportError(
            f"yolo-master is tested with ultralytics>={lo},<{hi} but {version} is installed: "
            f"run `pip install 'ultralytics>={lo},<{hi}'` (or set YOLO_MASTER_SKIP_VERSION_CHECK=1 to try anyway)"
        )
