"""Neural-network building blocks of YOLO-Master: the bottom floor, importing only torch (and
Ultralytics' stock modules), never the rest of this package.

- ``routers/``: ``forward(x) -> Routing`` (top-K, soft, variable K, scene) and their registry;
- ``experts.py`` / ``dispatch.py`` / ``fusion.py``: the expert bank, how it runs, its folded form;
- ``moe.py`` (ES-MoE), ``hierarchical.py`` (HiMoE), ``moe_ffn.py`` (FFN-MoE): the routed blocks,
  all :class:`RoutedBlock` (``block.py``), configured at construction by ``options.py``;
- ``cost.py``: parameters and FLOPs from a block's configuration.
"""

from torch import nn

from .block import RoutedBlock, moe_layers, named_moe_layers
from .dispatch import EAGER_STRATEGIES, EXPORT_STRATEGIES, STRATEGIES
from .experts import ExpertBank
from .hierarchical import HiMoE
from .moe import ESMoE
from .moe_ffn import FFNMoE
from .options import MoEOptions
from .released import ESMoEv0, SpatialMoE
from .routers import ROUTERS, Router, Routing, TopKRouter, create_router, register_router

# YAML name -> (c1, c2, *args) class; the last two are the official releases' blocks (released.py)
BLOCKS: dict[str, type[nn.Module]] = {"ESMoE": ESMoE, "HiMoE": HiMoE, "ESMoEv0": ESMoEv0, "SpatialMoE": SpatialMoE}

__all__ = (
    "BLOCKS",
    "EAGER_STRATEGIES",
    "EXPORT_STRATEGIES",
    "ROUTERS",
    "STRATEGIES",
    "ESMoE",
    "ESMoEv0",
    "SpatialMoE",
    "ExpertBank",
    "FFNMoE",
    "HiMoE",
    "MoEOptions",
    "RoutedBlock",
    "Router",
    "Routing",
    "TopKRouter",
    "create_router",
    "moe_layers",
    "named_moe_layers",
    "register_router",
)
