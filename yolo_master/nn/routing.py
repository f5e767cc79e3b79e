"""Routers for ES-MoE: the GAP gating network (paper eq. 5), phased top-K routing (eq. 6-10) and the
MSE load-balancing loss (eq. 12-13).

The router is its own module and *returns* everything the block and the task loss need (chosen
indices, their weights, the dense weight matrix and the auxiliary loss), like DeepSpeed's ``TopKGate``:
nothing is stored in a global registry.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .dispatch import is_tracing

EPS = 1e-9  # eq. 8's epsilon: guards the renormalisation, far below float32 resolution of the weights


class Routing(NamedTuple):
    """One routing decision per image.

    Attributes:
        indices: ``(B, K)`` chosen experts, highest weight first.
        weights: ``(B, K)`` their aggregation weights (each row sums to 1).
        dense: ``(B, E)`` the same weights scattered over all experts, zeros for the unchosen.
        aux_loss: scalar load-balancing loss of this batch (eq. 13).
        logits: ``(B, E)`` raw gate logits.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    dense: torch.Tensor
    aux_loss: torch.Tensor
    logits: torch.Tensor

    def detached(self) -> Routing:
        """A copy without autograd history, safe to keep between forward passes."""
        return Routing(*(t.detach() for t in self))


def top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values, highest first; ties go to the lower expert index, on every run.

    ``torch.topk`` leaves the order of equal values unspecified; a stable sort does not. ONNX TopK
    specifies the same rule (equal values: lower index first), so while tracing for export the
    graph gets a plain TopK and agrees with eager.
    """
    if is_tracing():
        return values.topk(k, dim=-1)
    top, idx = values.sort(dim=-1, descending=True, stable=True)
    return top[..., :k], idx[..., :k]


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


def distributed() -> bool:
    """True inside a multi-process group (DDP): per-batch statistics must then span every rank."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def load_balancing_loss(dense: torch.Tensor) -> torch.Tensor:
    """Eq. 12-13: MSE between each expert's mean share of the routing weight and the uniform ``1/E``.

    Under DDP the expectation in eq. 12 runs over the global batch: the per-expert sums and the image
    count are all-reduced with the differentiable ``all_reduce``, so every rank computes the same loss
    and, after DDP averages gradients, the gradient is that of the one global loss.
    """
    e = dense.shape[-1]
    share = dense / dense.sum(dim=-1, keepdim=True).clamp_min(EPS)  # the per-image fraction in eq. 12
    total, count = share.sum(dim=0), share.new_tensor(float(share.shape[0]))
    if distributed() and not is_tracing():
        from torch.distributed.nn.functional import all_reduce

        total = all_reduce(total)
        count = all_reduce(count.detach())
    usage = total / count  # mu_i, the expectation over the (global) batch
    return ((usage - 1.0 / e) ** 2).mean()


class TopKRouter(nn.Module):
    """GAP -> 1x1 conv (C -> C_red) -> SiLU -> 1x1 conv (C_red -> E) -> phased top-K.

    Args:
        c1: input channels.
        num_experts: E.
        top_k: K, experts chosen per image (1 <= K <= E).
        reduction: gamma in ``C_red = max(C / gamma, min_hidden)``.
        min_hidden: the floor of ``C_red`` (8 in the paper).

    Shape:
        input ``(B, c1, H, W)``; every tensor of the returned :class:`Routing` has batch ``B``.
        The cost does not depend on ``H x W`` beyond the pooling.
    """

    def __init__(self, c1: int, num_experts: int, top_k: int, reduction: int = 8, min_hidden: int = 8) -> None:
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        hidden = max(c1 // reduction, min_hidden)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c1, hidden, 1)
        self.act = nn.SiLU()
        self.logits = nn.Conv2d(hidden, num_experts, 1)
        # Loss-free balancing (GigaMoE, Algorithm 1): a per-expert bias that shifts *which* experts are
        # chosen, never their weights; updated once per optimizer step by `update_selection_bias`. Zero
        # (and so without effect) unless the model YAML enables it; saved with the model, exported as a constant.
        self.register_buffer("selection_bias", torch.zeros(num_experts))
        self.register_buffer("step_counts", torch.zeros(num_experts), persistent=False)
        self.bias_rate, self.bias_decay = 0.0, "constant"  # set from the model YAML's `moe:` section

    def forward(self, x: torch.Tensor) -> Routing:
        logits = self.logits(self.act(self.reduce(self.pool(x)))).flatten(1)  # eq. 5, (B, E)
        if self.top_k == self.num_experts:  # eq. 8 and 9 both reduce to a softmax: no TopK in the graph
            dense = weights = logits.softmax(dim=-1)
            indices = torch.arange(self.num_experts, device=x.device).expand_as(logits)
            return Routing(indices, weights, dense, load_balancing_loss(dense), logits)
        select = soft_top_k if self.training else hard_top_k  # eq. 10
        weights, indices = select(logits, self.top_k, self.selection_bias)
        if self.training and self.bias_rate > 0:  # only bias-balanced routers need the counts
            self.step_counts += torch.bincount(indices.flatten().detach(), minlength=self.num_experts).to(logits.dtype)
        dense = torch.zeros_like(logits).scatter(1, indices, weights)
        return Routing(indices, weights, dense, load_balancing_loss(dense), logits)

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
        return f"num_experts={self.num_experts}, top_k={self.top_k}"
