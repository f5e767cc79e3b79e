"""Top-K routing (YOLO-Master eq. 5-10): soft top-K in training, hard top-K at inference.

Two options from other papers, both on the selection only:

- loss-free bias balancing (GigaMoE, Algorithm 1): a per-expert bias added to the logits when
  *choosing* experts, never to their weights; after each optimizer step it moves by
  ``u_t * sign(mean load - load_i)`` (``bias_rate`` = u_init, decayed over training by ``bias_decay``),
  the loads counted since the previous step and summed over DDP ranks;
- expert capacity (the rho paper; ``capacity.py``): training only.

K == E is the soft mixture: every expert runs with softmax weights, eq. 8 and 9 coincide, and export
traces the plain static graph.
"""

from __future__ import annotations

import math

import torch

from ..capacity import apply_capacity
from .base import EPS, Router, Routing, distributed, load_balancing_loss, scatter_dense, top_k

BIAS_DECAYS = ("constant", "linear", "cosine")


def soft_top_k(logits: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training mode, eq. 6-8: softmax over all E, keep the top K, renormalise the kept weights.

    ``bias`` (loss-free balancing) shifts the selection only; the weights come from the logits.
    """
    probs = logits.softmax(dim=-1)  # eq. 6
    _, idx = top_k(logits if bias is None else logits + bias, k)  # I_K (eq. 7); softmax keeps the order
    top = probs.gather(-1, idx)
    return top / (top.sum(dim=-1, keepdim=True) + EPS), idx  # eq. 8


def hard_top_k(logits: torch.Tensor, k: int, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference mode, eq. 9: the top K logits (selection shifted by ``bias``), softmax over those K only."""
    _, idx = top_k(logits if bias is None else logits + bias, k)
    return logits.gather(-1, idx).softmax(dim=-1), idx


def masked_top_k(
    logits: torch.Tensor, k: int, bias: torch.Tensor | None = None, comparisons: bool = False
) -> torch.Tensor:
    """Eq. 9 as a ``(B, E)`` weight matrix (0 for the unchosen) from elementwise arithmetic only.

    The ``masked`` export strategy's routing, for converters without TopK, Gather, Scatter or even
    comparison ops (ncnn has none of the comparisons). Expert i's rank counts the experts with a higher
    selection score, ties to the lower index as in :func:`top_k`; ``a > b`` is ``ceil(clamp(a - b, 0, 1))``,
    exact in floating point, or with ``comparisons`` a plain ``a > b`` (x2paddle maps comparisons but
    not ceil). The weights are ``exp(g - max g)`` on the K chosen, normalised: the softmax over the
    chosen logits.
    """
    score = logits if bias is None else logits + bias
    e = score.shape[-1]
    greater = _compared if comparisons else _greater
    higher = greater(score.unsqueeze(1), score.unsqueeze(2))  # [b, i, j]: score_j > score_i
    lower = greater(score.unsqueeze(2), score.unsqueeze(1))  # score_i > score_j
    earlier = torch.ones(e, e, dtype=score.dtype, device=score.device).tril(-1)  # [i, j]: j < i
    rank = (higher + earlier * (1.0 - higher - lower)).sum(-1)
    chosen = greater(k - rank, 0.0)
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True)) * chosen
    return weights / weights.sum(dim=-1, keepdim=True)


def _greater(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``(a > b)`` as 0.0 / 1.0 from a subtraction, a clip and a ceil."""
    return torch.ceil(torch.clamp(a - b, 0.0, 1.0))


def _compared(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``(a > b)`` as 0.0 / 1.0 from a comparison."""
    return (a > b).to(a.dtype)


def decayed_rate(rate: float, decay: str, progress: float) -> float:
    """``u_t`` at ``progress`` in [0, 1] of training."""
    progress = min(max(progress, 0.0), 1.0)
    if decay == "linear":
        return rate * (1.0 - progress)
    if decay == "cosine":
        return rate * 0.5 * (1.0 + math.cos(math.pi * progress))
    return rate


class TopKRouter(Router):
    """The paper's router: the gate, then phased top-K (eq. 10).

    Args:
        c1, num_experts, top_k, reduction: see :class:`Router`.
        capacity: training-only capacity factor (``None``: none).
        bias_rate: loss-free balancing rate ``u_init`` (0: off).
        bias_decay: ``constant``, ``linear`` or ``cosine`` decay of the rate over training.

    Shape:
        input ``(B, c1, H, W)``; every tensor of the returned :class:`Routing` has batch ``B``.
    """

    state_buffers = ("selection_bias",)
    capacity: float | None = None  # class defaults: routers pickled before these options existed load too
    mask_by_comparison = False  # set during an export whose converter wants comparisons in `masked`
    bias_rate, bias_decay = 0.0, "constant"

    def __init__(
        self,
        c1: int,
        num_experts: int,
        top_k: int,
        reduction: int = 8,
        capacity: float | None = None,
        bias_rate: float = 0.0,
        bias_decay: str = "constant",
    ) -> None:
        super().__init__(c1, num_experts, top_k, reduction)
        self.capacity, self.bias_rate, self.bias_decay = capacity, float(bias_rate), bias_decay
        # Zero (and so without effect) unless bias balancing is on; saved with the model, exported as a constant.
        self.register_buffer("selection_bias", torch.zeros(num_experts))
        self.register_buffer("step_counts", torch.zeros(num_experts), persistent=False)

    @property
    def all_experts(self) -> bool:
        return self.top_k == self.num_experts

    def select(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights, indices)``, each ``(B, K)``: eq. 8 in training, eq. 9 at inference."""
        choose = soft_top_k if self.training else hard_top_k
        return choose(logits, self.top_k, self.selection_bias)

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.gate(x)
        if self.all_experts:  # eq. 8 and 9 both reduce to a softmax: no TopK in the graph
            # over dim 1 of the (B, E, 1, 1) map, as the v0 release computes it: bit-equal weights
            dense = weights = logits[:, :, None, None].softmax(dim=1).flatten(1)
            indices = torch.arange(self.num_experts, device=x.device).expand_as(logits)
            return Routing(indices, weights, dense, load_balancing_loss(dense), logits)
        weights, indices = self.select(x, logits)
        dropped = None
        if self.training and self.capacity is not None:
            weights, dropped = apply_capacity(indices, weights, self.num_experts, self.capacity)
        if self.training and self.bias_rate > 0:  # only bias-balanced routers need the counts
            used = indices.detach()[weights.detach() != 0]
            self.step_counts += torch.bincount(used, minlength=self.num_experts).to(logits.dtype)
        dense = scatter_dense(indices, weights, self.num_experts)
        return Routing(indices, weights, dense, load_balancing_loss(dense), logits, dropped)

    def masked(self, x: torch.Tensor) -> Routing:
        """Inference routing without TopK, Gather or Scatter: every expert in expert order, the unchosen
        with weight 0 (:func:`masked_top_k`). The ``masked`` export strategy traces this."""
        if self.all_experts:
            return self(x)
        logits = self.gate(x)
        dense = masked_top_k(logits, self.top_k, self.selection_bias, self.mask_by_comparison)
        indices = torch.arange(self.num_experts, device=x.device).expand_as(logits)
        return Routing(indices, dense, dense, load_balancing_loss(dense), logits)

    def after_step(self, progress: float) -> None:
        """Loss-free balancing: move the selection bias by the decayed rate, from the counts since the last step."""
        if self.bias_rate > 0:
            self.update_selection_bias(decayed_rate(self.bias_rate, self.bias_decay, progress))

    @torch.no_grad()
    def update_selection_bias(self, rate: float) -> None:
        """``b_i += rate * sign(mean load - load_i)`` from the choices since the last call, then reset them.

        Under DDP the counts are summed over ranks first, so every rank applies the same update.
        """
        counts = self.step_counts.clone()
        if distributed():
            torch.distributed.all_reduce(counts)
        if counts.sum() > 0:
            self.selection_bias += rate * torch.sign(counts.mean() - counts)
        self.step_counts.zero_()

    def extra_repr(self) -> str:
        extra = f", capacity={self.capacity}" if self.capacity is not None else ""
        extra += f", bias_rate={self.bias_rate:g} ({self.bias_decay})" if self.bias_rate > 0 else ""
        return super().extra_repr() + extra


class SoftRouter(TopKRouter):
    """Every expert, softmax weights per image (the rho paper's per-sample Soft MoE): the dense baseline."""

    def __init__(self, c1: int, num_experts: int, top_k: int | None = None, reduction: int = 8) -> None:
        super().__init__(c1, num_experts, num_experts, reduction)
