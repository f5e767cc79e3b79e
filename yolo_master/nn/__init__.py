"""Neural-network building blocks of YOLO-Master."""

from .dispatch import STRATEGIES
from .experts import ExpertBank
from .hierarchical import HiMoE
from .moe import ESMoE
from .routing import Routing, TopKRouter

__all__ = ("ESMoE", "ExpertBank", "HiMoE", "Routing", "STRATEGIES", "TopKRouter")
