"""What a routed block costs: parameters used per image and multiply-accumulates, from its configuration.

Plain functions of a block's structure and its input size, never of the route an input happened to
take, so counts are reproducible: routed experts count at the expected number per image (K, or
``sum_j j p_j`` with variable K) and at their average size. Ultralytics' FLOPs counter (thop) calls
:func:`expert_macs` through a rule registered for each block class (``integration/``); the block's
router convolutions and norm are counted by thop's own rules.
"""

from __future__ import annotations

from torch import nn

from .experts import ExpertBank
from .hierarchical import HiMoE
from .moe import ESMoE
from .moe_ffn import FFNMoE
from .released import SpatialMoE


def routed_per_image(block: nn.Module) -> float:
    """Routed experts run per image on average."""
    if isinstance(block, HiMoE):
        return float(block.group_k * block.per_group)  # every expert of the chosen groups runs on the whole map
    return block.router.expected_k()


def routed_macs(block: nn.Module, batch: int, h: int, w: int) -> float:
    """Multiply-accumulates of the routed experts for one forward of ``batch`` images of ``h x w``."""
    pixels = batch * h * w
    if isinstance(block, FFNMoE):
        bank = block.experts
        return pixels * block.top_k * bank.hidden * (2 * bank.c + 1)
    bank = block.experts
    routed = bank.num_routed
    mean = sum(bank.pixel_macs(e) for e in range(routed)) / routed
    return pixels * routed_per_image(block) * mean


def shared_macs(block: nn.Module, batch: int, h: int, w: int) -> float:
    """Multiply-accumulates of the always-on shared expert(s), if any."""
    bank = block.experts
    if not isinstance(bank, ExpertBank):
        return 0.0
    return batch * h * w * sum(bank.pixel_macs(e) for e in range(bank.num_routed, bank.num_experts))


def expert_macs(block: nn.Module, batch: int, h: int, w: int) -> float:
    """Every expert that runs: routed plus shared."""
    return routed_macs(block, batch, h, w) + shared_macs(block, batch, h, w)


def conv_expert_blocks(model: nn.Module) -> list[nn.Module]:
    """Blocks whose experts are convolutions (ES-MoE, HiMoE): what rho counts as routed compute."""
    return [m for m in model.modules() if isinstance(m, (ESMoE, HiMoE, SpatialMoE))]


def _unused_params(block: nn.Module) -> float:
    if isinstance(block, FFNMoE):
        return (block.num_experts - block.top_k) * block.experts.expert_params()
    bank = block.experts
    routed = sum(map(bank.expert_params, range(bank.num_routed)))
    if isinstance(block, HiMoE):
        return routed * (block.groups - block.group_k) / block.groups
    return (bank.num_routed - routed_per_image(block)) * routed / bank.num_routed


def active_params(module: nn.Module) -> int:
    """Parameters used for one image: routed blocks count only the experts that run (on average)."""
    if isinstance(module, (ESMoE, HiMoE, FFNMoE, SpatialMoE)):
        return sum(p.numel() for p in module.parameters()) - round(_unused_params(module))
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return own + sum(active_params(child) for child in module.children())
