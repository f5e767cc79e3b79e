"""YOLO-Master: sparse Mixture-of-Experts real-time detection on top of Ultralytics.

Importing this package (before or instead of ``ultralytics``) sets the offline defaults
(``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0`` unless set; Ultralytics reads them once, at its import),
checks the installed Ultralytics, and teaches it our blocks (``integration/``).
"""

from .integration.runtime import configure_environment

configure_environment()

from .integration import install  # noqa: E402

install()

from .model import YOLOMaster  # noqa: E402
from .nn import ESMoE  # noqa: E402

__version__ = "0.1.0"
__all__ = ("ESMoE", "YOLOMaster", "__version__")
