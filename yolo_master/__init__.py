"""YOLO-Master: sparse Mixture-of-Experts real-time detection on top of Ultralytics.

Importing this package (before or instead of ``ultralytics``) sets the offline defaults, checks the
installed Ultralytics version, and registers the ES-MoE blocks with Ultralytics' model parser.
"""

from .offline import configure_environment

configure_environment()

from .compat import check_ultralytics_version  # noqa: E402

check_ultralytics_version()

from .model import YOLOMaster  # noqa: E402
from .nn.register import register  # noqa: E402
from .offline import use_local_fonts  # noqa: E402

register()
use_local_fonts()

from .nn import ESMoE  # noqa: E402

__version__ = "0.1.0"
__all__ = ("ESMoE", "YOLOMaster", "__version__")
