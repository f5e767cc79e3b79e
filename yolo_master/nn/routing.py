"""Import path that checkpoints pickled before ``routers/`` existed name (``yolo_master.nn.routing.TopKRouter``).

New code imports from :mod:`yolo_master.nn.routers`.
"""

from .routers import Routing, TopKRouter

__all__ = ("Routing", "TopKRouter")
