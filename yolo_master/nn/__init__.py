"""Neural-network building blocks of YOLO-Master."""

from .dispatch import STRATEGIES
from .experts import ExpertBank
from .moe import ESMoE
from .routing import Routing, TopKRouter

__all__ = ("ESMoE", "ExpertBank", "Routing", "STRATEGIES", "TopKRouter")
