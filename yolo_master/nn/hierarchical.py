"""Hierarchical scene / instance routing after HI-MoE (section 3, Algorithm 1), as a convolutional block.

HI-MoE routes the object queries of a DETR decoder in two levels. Our block routes a feature map, so
each piece is mapped onto the convolutional setting:

- *scene router* (sec. 3.3.1, ``g = softmax(W_g x_global / tau_s)``): :class:`~.routers.SceneRouter`,
  ES-MoE's gate shape (GAP -> 1x1 conv -> SiLU -> 1x1 conv) giving ``N_s`` logits; the block's ``router``.
- *scene routes* (top-``K_s`` of ``g``): the paper leaves open what a route selects; here the ``N_e``
  experts are split into ``N_s`` equal, contiguous *groups* and a route is a group, so each image keeps
  ``K_s`` groups, a pool of ``M = K_s * N_e / N_s`` experts.
- *object query* ``q_i``: one spatial location of the map; the instance router (sec. 3.3.2,
  ``e_i = softmax(W_i [q_i; g] / tau_i)``) is a 1x1 conv on ``[x; g]``, ``g`` broadcast over ``H x W``.
- *MaskToPool, TopK, renormalise* (Algorithm 1, step 5): logits outside the pool are set to ``-inf``,
  the top K are kept per location, and ``w_k = e_k / sum_{j in top-K} e_j``, which is exactly a softmax
  of the K kept logits divided by ``tau_i`` (the full softmax's normaliser cancels). Training and
  inference use this one rule; there is no phased top-K as in ES-MoE.
- *experts*: ES-MoE's depthwise-separable experts (:class:`ExpertBank`), not FFNs: an expert sees the
  neighbourhood of a location, which a query FFN never needs. ``y = Norm(sum_k w_k(h, w) Expert_k(x))``
  plus ES-MoE's identity shortcut.
- *losses* (sec. 3.5): see :func:`balance_loss` and :func:`diversity_loss`.

Cost, honestly: a convolution needs the neighbours of every location it serves, so an expert of a chosen
group runs on the whole map of that image; per-location top-K only weights the outputs and saves no
convolution FLOPs. Only the group choice saves compute: ``M`` of ``N_e`` experts run per image (4 of 8
with the defaults; ES-MoE's layers run K = 2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .block import RoutedBlock, check_int, check_shape_args
from .experts import ExpertBank
from .moe import check_moe_args
from .routers.base import EPS, Routing, is_tracing, top_k
from .routers.scene import SceneRouter


def group_kernel_sizes(num_experts: int, groups: int) -> tuple[int, ...]:
    """Kernels 3, 5, 7, ... inside a group, the same in every group (defaults: 3, 5, 3, 5, 3, 5, 3, 5).

    Every scene route then offers each location the same choice of receptive fields (small or larger
    context), and every group costs the same, so the compute does not depend on the scene choice.
    """
    per = num_experts // groups
    return tuple(3 + 2 * (i % per) for i in range(num_experts))


def _check_number(name: str, value, zero_ok: bool) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value < 0 or (value == 0 and not zero_ok):
        kind = "a finite number >= 0" if zero_ok else "a finite number > 0"
        raise ValueError(f"HiMoE {name} must be {kind}, got {value!r}")
    return float(value)


def check_himoe_args(num_experts, top_k, groups, group_k, kernel_sizes) -> tuple[int, int, int, int, tuple[int, ...]]:
    """Validate ``N_e, K, N_s, K_s`` and kernels; raise one readable ``ValueError`` naming the fix."""
    num_experts = check_int("HiMoE", "num_experts (N_e)", num_experts, 1)
    groups = check_int("HiMoE", "groups (N_s)", groups, 1)
    if num_experts % groups:
        raise ValueError(
            f"HiMoE num_experts={num_experts} cannot be split into groups={groups} equal groups: "
            "choose N_e divisible by N_s"
        )
    group_k = check_int("HiMoE", "group_k (K_s)", group_k, 1)
    if group_k > groups:
        raise ValueError(f"HiMoE group_k={group_k} exceeds groups={groups}: choose 1 <= K_s <= N_s")
    top_k = check_int("HiMoE", "top_k (K)", top_k, 1)
    pool = group_k * num_experts // groups
    if top_k > pool:
        raise ValueError(
            f"HiMoE top_k={top_k} exceeds the {pool} experts of the {group_k} chosen groups: "
            "choose 1 <= K <= K_s * N_e / N_s"
        )
    if kernel_sizes is None:
        kernel_sizes = group_kernel_sizes(num_experts, groups)
    _, _, kernel_sizes = check_moe_args(num_experts, top_k, kernel_sizes, owner="HiMoE")
    return num_experts, top_k, groups, group_k, kernel_sizes


def balance_loss(assigned: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``L_balance = sum_k (f_k - 1/N_e)^2`` (sec. 3.5), made differentiable by a straight-through estimate.

    ``f_k`` (from ``assigned``, ``(B, N_e, H, W)`` 0/1) is the fraction of the batch's routed
    (location, slot) assignments that went to expert k, the paper's quantity, but it has no gradient.
    Its differentiable stand-in is ``P_k``, the mean over images and locations of the hierarchical
    routing probability ``probs`` (scene probability of k's group x instance probability of k within
    the group). The loss *value* uses ``f``; the *gradient* flows through ``P`` (``f + P - sg(P)``),
    into both routers. Statistics are per process (not all-reduced under DDP).
    """
    f = assigned.sum((0, 2, 3)) / assigned.sum().clamp_min(1.0)
    p = probs.mean((0, 2, 3))
    f = f.detach() + p - p.detach()
    return ((f - 1.0 / f.numel()) ** 2).sum()


def diversity_loss(responses: torch.Tensor) -> torch.Tensor:
    """``-JS`` over the computed experts' responses, per image, averaged over the batch (sec. 3.5).

    The paper regularises with a Jensen-Shannon divergence "across expert responses". Here an expert's
    response to an image is its output pooled over ``H x W`` (``responses``, ``(B, M, C2)``), turned into a
    distribution over channels by a softmax; the generalised JS divergence of the M experts that ran,
    ``H(mean_m p_m) - mean_m H(p_m)`` (in ``[0, log M]``), is maximised, so the loss is its negative and
    so never positive. Its gradient reaches the experts, not the routers.
    """
    logp = responses.float().log_softmax(-1)
    p = logp.exp()
    mix = p.mean(1)
    h_mix = -(mix * mix.clamp_min(EPS).log()).sum(-1)
    h_each = -(p * logp).sum(-1).mean(1)
    return -(h_mix - h_each).mean()


def run_pool(bank, norm, x, pool, weights, responses: list | None = None) -> torch.Tensor:
    """Eager execution: each expert of some image's pool runs once, on the images whose pool holds it.

    Args:
        pool: ``(B, M)`` the experts computed for each image (its chosen groups).
        weights: ``(B, N_e, H, W)`` per-location weights (zero outside each location's top K).
        responses: when a list, the ``(B, M, C2)`` spatially pooled expert outputs are appended to it.
    """
    b, _, h, w = x.shape
    out = x.new_zeros(b, bank.c2, h, w)
    pooled = x.new_zeros(b, pool.shape[1], bank.c2)
    for e in torch.unique(pool).tolist():
        rows, slots = (pool == e).nonzero(as_tuple=True)
        y = bank.expert(e, x[rows])
        out = out.index_add(0, rows, (y * weights[rows, e].unsqueeze(1)).to(out.dtype))
        if responses is not None:
            pooled = pooled.index_put((rows, slots), y.mean((2, 3)).to(pooled.dtype))
    if responses is not None:
        responses.append(pooled)
    return norm(out)


def run_pool_graph(bank, norm, x, pool, weights) -> torch.Tensor:
    """Export form (eval): no If, Loop or NonZero; the static batch is unrolled image by image.

    Like ES-MoE's ``slice`` strategy, expert e runs on ``x_i.index_select(0, arange(chosen_e))``, a batch
    of one image when e is in the image's pool and of none otherwise, so unchosen groups cost nothing.
    Exactly M experts are chosen, so the concatenation of their weighted outputs has M rows to sum.
    BatchNorms run in eval mode, unfolded.
    """
    outs = []
    for i in range(x.shape[0]):
        chosen = torch.zeros(bank.num_experts, dtype=torch.int64, device=x.device)
        chosen = chosen.scatter(0, pool[i], torch.ones_like(pool[i]))
        parts = []
        for e in range(bank.num_experts):
            take = torch.arange(chosen[e], device=x.device)
            y = bank.expert(e, x[i : i + 1].index_select(0, take))
            parts.append(y * weights[i : i + 1, e : e + 1].index_select(0, take).to(y.dtype))
        outs.append(norm(torch.cat(parts).sum(0, keepdim=True)))
    return torch.cat(outs)


class HiMoE(RoutedBlock):
    """Hierarchical MoE block, YAML row ``[from, n, HiMoE, [c2, N_e, K, N_s, K_s]]``.

    Args:
        c1: input channels (inferred by the model parser).
        c2: output channels (width-scaled by the model parser).
        num_experts: ``N_e`` (default 8; the paper uses 16 for a 256-d decoder, halved for our narrower maps).
        top_k: ``K``, experts weighted at each location, chosen inside the pool (default 2, paper Table 5).
        groups: ``N_s``, scene routes = expert groups of ``N_e / N_s`` experts (default 4, as in the paper).
        group_k: ``K_s``, groups kept per image (default 2, as in the paper).
        kernel_sizes: one odd kernel per expert; default :func:`group_kernel_sizes` (3, 5 in every group).
        tau_s, tau_i: scene and instance softmax temperatures (default 1.0).
        reduction: scene-router channel reduction (``hidden = max(c1 / reduction, 8)``, as ES-MoE's gate).
        shortcut: add the input back when ``c1 == c2``.
        balance_weight, diversity_weight: ``lambda_1``, ``lambda_2`` (paper: 0.01, 0.001). The block hands
            over ``lambda_1 L_balance + lambda_2 L_diversity``; the trainer multiplies every layer's loss by
            the ``moe`` gain (default 0.5) and the batch size, as it does for ES-MoE's loss, so relative to
            Ultralytics' (per-image summed) task loss the weights are ``moe x lambda``; ``moe=1`` keeps the
            paper's lambdas. 0 turns a term off.

    Shape:
        ``(B, c1, H, W) -> (B, c2, H, W)``; groups chosen per image, experts weighted per location.

    ``last_routing`` is in ES-MoE's form, for statistics and ``routes``: ``dense`` ``(B, N_e)`` is, per
    image, the mean over locations of the per-location weights (zeros outside the chosen groups; rows
    sum to 1); ``indices`` ``(B, M)`` the experts of the chosen groups, best group first; ``weights``
    their ``dense`` entries; ``logits`` the ``(B, N_s)`` scene logits; ``aux_loss`` balance + diversity.
    """

    def __init__(
        self,
        c1: int,
        c2: int | None = None,
        num_experts: int = 8,
        top_k: int = 2,
        groups: int = 4,
        group_k: int = 2,
        kernel_sizes: tuple[int, ...] | None = None,
        tau_s: float = 1.0,
        tau_i: float = 1.0,
        reduction: int = 8,
        shortcut: bool = True,
        balance_weight: float = 0.01,
        diversity_weight: float = 0.001,
    ) -> None:
        super().__init__()
        c1, c2, reduction = check_shape_args("HiMoE", c1, c2, reduction)
        num_experts, top_k, groups, group_k, kernel_sizes = check_himoe_args(
            num_experts, top_k, groups, group_k, kernel_sizes
        )
        self.tau_i = _check_number("tau_i", tau_i, zero_ok=False)
        self.balance_weight = _check_number("balance_weight", balance_weight, zero_ok=True)
        self.diversity_weight = _check_number("diversity_weight", diversity_weight, zero_ok=True)
        self.c1, self.c2, self.instance_k = c1, c2, top_k
        self.per_group = num_experts // groups
        self.router = SceneRouter(c1, groups, group_k, reduction, tau=_check_number("tau_s", tau_s, zero_ok=False))
        self.instance = nn.Conv2d(c1 + groups, num_experts, 1)  # W_i on [x; g]
        self.experts = ExpertBank(c1, c2, kernel_sizes)
        self.norm = nn.BatchNorm2d(c2)
        self.add = shortcut and c1 == c2

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "router" not in self._modules:  # pickled before HiMoE was a RoutedBlock
            from .legacy import upgrade_himoe

            upgrade_himoe(self)

    @property
    def num_experts(self) -> int:
        """``N_e`` (the router chooses among the ``N_s`` groups)."""
        return self.experts.num_experts

    @property
    def top_k(self) -> int:
        """``K``, experts weighted at each location."""
        return self.instance_k

    @property
    def groups(self) -> int:
        return self.router.num_experts

    @property
    def group_k(self) -> int:
        return self.router.top_k

    @property
    def tau_s(self) -> float:
        return self.router.tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        scene = self.router(x)  # (B, K_s) groups, g = (B, N_s) scene distribution
        g = scene.dense
        inst_logits = self.instance(torch.cat([x, g[:, :, None, None].expand(b, -1, h, w).to(x.dtype)], 1))
        self.check_finite(scene.logits, inst_logits)
        offsets = torch.arange(self.per_group, device=x.device)
        pool = (scene.indices.unsqueeze(-1) * self.per_group + offsets).flatten(1)  # (B, M) experts of those groups
        in_pool = torch.zeros(b, self.num_experts, device=x.device).scatter(1, pool, 1.0) > 0
        scaled = (inst_logits / self.tau_i).permute(0, 2, 3, 1)  # (B, H, W, N_e)
        top, idx = top_k(scaled.masked_fill(~in_pool[:, None, None], float("-inf")), self.top_k)
        weights = torch.zeros_like(scaled).scatter(-1, idx, top.softmax(-1)).permute(0, 3, 1, 2)  # (B, N_e, H, W)

        graph = not self.training and is_tracing()
        responses = [] if self.diversity_weight > 0 and not graph else None
        if graph:
            y = run_pool_graph(self.experts, self.norm, x, pool, weights)
        else:
            y = run_pool(self.experts, self.norm, x, pool, weights, responses)
        aux = x.new_zeros((), dtype=torch.float32) if graph else self._aux_loss(g, scaled, idx, responses)
        dense = weights.mean((2, 3))
        self.record(Routing(pool, dense.gather(1, pool), dense, aux, scene.logits), aux)
        return x + y if self.add else y

    def _aux_loss(self, g: torch.Tensor, scaled: torch.Tensor, idx: torch.Tensor, responses) -> torch.Tensor:
        """``lambda_1 L_balance + lambda_2 L_diversity``; ``scaled``: ``(B, H, W, N_e)`` instance logits / tau_i."""
        loss = g.new_zeros((), dtype=torch.float32)
        if self.balance_weight > 0:
            assigned = torch.zeros_like(scaled, dtype=torch.float32).scatter(-1, idx, 1.0).permute(0, 3, 1, 2)
            within = scaled.float().unflatten(-1, (self.groups, self.per_group)).softmax(-1)  # instance, per group
            probs = (within * g.float()[:, None, None, :, None]).flatten(-2).permute(0, 3, 1, 2)
            loss = loss + self.balance_weight * balance_loss(assigned, probs)
        if responses:
            loss = loss + self.diversity_weight * diversity_loss(responses[0])
        return loss

    def extra_repr(self) -> str:
        kernels = ",".join(map(str, self.experts.kernel_sizes))
        return (
            f"{self.c1}, {self.c2}, num_experts={self.num_experts}, top_k={self.top_k}, groups={self.groups}, "
            f"group_k={self.group_k}, kernels={kernels}, tau_s={self.tau_s:g}, tau_i={self.tau_i:g}, "
            f"shortcut={self.add}"
        )
