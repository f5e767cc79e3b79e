"""ES-MoE block (YOLO-Master, section 3): router + expert bank + execution strategy + norm.

``Y = Norm(sum_{i in T_K} w_i * Expert_i(X))`` (eq. 2), with an identity shortcut when the block
preserves channels (``shortcut=True``; set it False for the paper's exact form). The shortcut is our
choice: a freshly initialised router otherwise perturbs every feature the later stages read.

Routing options from other papers (issue 7; the model YAML's ``moe:`` section, ``register.py``):

- shared expert (GigaMoE): ``Y = Norm(Shared(X) + sum_k w_k E_k(X))``, a 3x3 expert that always runs.
  GigaMoE keeps the peak cost of the dense FFN by giving each of its ``k_max + 1`` experts
  ``1 / (k_max + 1)`` of the FFN's hidden width. Our experts have no hidden width to divide (each maps
  ``c1 -> c2`` through one depthwise and one pointwise convolution), so the budget is kept by count:
  the shared expert takes one of the K slots (``K - 1`` routed), and the block's peak cost stays that
  of the plain top-K block. It is held as the last expert of the bank, chosen with weight 1 for every
  image, so every execution and export strategy runs it unchanged.
- variable K, capacity, bias balancing: the router's (``routing.py``).
- soft mixture (the rho paper's per-sample Soft MoE): K = E, softmax over experts per image.
"""

from __future__ import annotations

import torch
from torch import nn

from .dispatch import STRATEGIES, resolve
from .experts import ExpertBank, default_kernel_sizes
from .routing import Routing, TopKRouter


class Transient:
    """Per-forward state (last routing, pending auxiliary loss) that is never copied or saved.

    Ultralytics deep-copies the model for its EMA and pickles it into checkpoints; a tensor with
    autograd history cannot be deep-copied and has no business in a checkpoint. Copies and
    unpickled models start with an empty slot instead.
    """

    __slots__ = ("routing", "aux_loss")

    def __init__(self) -> None:
        self.routing: Routing | None = None
        self.aux_loss: torch.Tensor | None = None

    def __reduce__(self):
        return Transient, ()


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"ESMoE {name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"ESMoE {name} must be >= {low}, got {value}")
    return value


SHARED_KERNEL = 3  # the shared expert's depthwise kernel: the common local pattern, the cheapest


def check_moe_args(num_experts, top_k, kernel_sizes) -> tuple[int, int, tuple[int, ...]]:
    """Validate E, K and kernels; raise one readable ``ValueError`` naming the fix."""
    num_experts = _check_int("num_experts (E)", num_experts, 1)
    top_k = _check_int("top_k (K)", top_k, 1)
    if top_k > num_experts:
        raise ValueError(f"ESMoE top_k={top_k} exceeds num_experts={num_experts}: choose 1 <= K <= E")
    kernel_sizes = default_kernel_sizes(num_experts) if kernel_sizes is None else tuple(kernel_sizes)
    if len(kernel_sizes) != num_experts:
        raise ValueError(f"ESMoE needs one kernel size per expert: got {len(kernel_sizes)} for E={num_experts}")
    for k in kernel_sizes:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"ESMoE kernel sizes must be odd positive integers, got {k!r} in {kernel_sizes}")
    return num_experts, top_k, kernel_sizes


class RoutedBlock(nn.Module):
    """What every per-image routed block (``self.router``, ``self._state``) shows the rest of the package:
    E and K, the latest routing (routing statistics, ``routes``) and the pending auxiliary loss (task loss)."""

    @property
    def num_experts(self) -> int:
        return self.router.num_experts

    @property
    def top_k(self) -> int:
        return self.router.top_k

    @property
    def last_routing(self) -> Routing | None:
        """The latest forward's routing decision (detached), for statistics and inspection."""
        return self._state.routing

    def take_aux_loss(self) -> torch.Tensor | None:
        """Hand the pending load-balancing loss to the task loss, once; ``None`` if none is pending."""
        loss, self._state.aux_loss = self._state.aux_loss, None
        return loss


class ESMoE(RoutedBlock):
    """Efficient Sparse Mixture-of-Experts block, YAML row ``[from, n, ESMoE, [c2, E, K]]``.

    Args:
        c1: input channels (inferred by the model parser).
        c2: output channels (width-scaled by the model parser like Ultralytics' own blocks).
        num_experts: E (default 4).
        top_k: K, experts run per image (default 2).
        kernel_sizes: one odd kernel per expert; default 3, 5, 7, ...
        reduction: gating channel reduction gamma (``C_red = max(C / gamma, 8)``).
        shortcut: add the input back when ``c1 == c2``.
        strategy: execution strategy: ``auto`` (default), ``select``, ``grouped``, ``dense`` (eager) or
            ``slice``, ``gather``, ``branch`` (graph form for export); see ``dispatch.py``.

    Shape:
        ``(B, c1, H, W) -> (B, c2, H, W)``; one routing decision per image.
    """

    def __init__(
        self,
        c1: int,
        c2: int | None = None,
        num_experts: int = 4,
        top_k: int = 2,
        kernel_sizes: tuple[int, ...] | None = None,
        reduction: int = 8,
        shortcut: bool = True,
        strategy: str = "auto",
    ) -> None:
        super().__init__()
        c2 = c1 if c2 is None else c2
        _check_int("c1", c1, 1)
        _check_int("c2", c2, 1)
        num_experts, top_k, kernel_sizes = check_moe_args(num_experts, top_k, kernel_sizes)
        self.c1, self.c2 = c1, c2
        self.router = TopKRouter(c1, num_experts, top_k, reduction)
        self.experts = ExpertBank(c1, c2, kernel_sizes)
        self.norm = nn.BatchNorm2d(c2)
        self.add = shortcut and c1 == c2
        self.strategy = strategy
        self._state = Transient()

    @property
    def strategy(self) -> str:
        return self._strategy

    @strategy.setter
    def strategy(self, name: str) -> None:
        if name != "auto" and name not in STRATEGIES:
            raise ValueError(f"unknown ESMoE strategy {name!r}; choose one of auto, {', '.join(STRATEGIES)}")
        self._strategy = name

    @property
    def shared(self) -> bool:
        """True when an always-on shared expert runs next to the routed ones."""
        return self.experts.num_shared > 0

    def configure(
        self,
        shared: bool = False,
        soft: bool = False,
        k_dist: tuple[float, ...] | None = None,
        capacity: float | None = None,
    ) -> None:
        """Apply the ``moe:`` section's routing options (before training: a shared expert is new weights).

        Raises:
            ValueError: one line, when the options do not fit this layer's E and K.
        """
        router, e = self.router, self.num_experts
        where = f"layer {self.i} " if hasattr(self, "i") else ""
        if soft:
            router.top_k = e
        elif shared and k_dist is None:
            if router.top_k < 2:
                raise ValueError(
                    f"ESMoE {where}has K={router.top_k}: 'shared: true' takes one of the K slots, so K must be >= 2 "
                    "(or give k_dist)"
                )
            router.top_k -= 1
        try:
            router.configure(k_dist, capacity)
        except ValueError as err:
            raise ValueError(f"ESMoE {where}{err}") from None
        if shared and not self.shared:
            bank = self.experts
            self.experts = ExpertBank(self.c1, self.c2, (*bank.kernel_sizes, SHARED_KERNEL), num_shared=1)
        self.experts.expected_routed = float(router.expected_k())

    def active_params(self) -> int:
        """Parameters used per image: all but the routed experts left out (mean routed expert size;
        with variable K, the expected number of experts)."""
        bank, e = self.experts, self.num_experts
        unused = (e - self.router.expected_k()) * sum(map(bank.expert_params, range(e))) / e
        return sum(p.numel() for p in self.parameters()) - round(unused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.router(x)
        # Only in a real training step (grad enabled): profilers feed uninitialised memory without
        # grad, and eval outputs of a broken model are visibly broken anyway.
        if self.training and torch.is_grad_enabled() and not torch.isfinite(routing.logits).all():
            where = f"layer {self.i} " if hasattr(self, "i") else ""
            raise FloatingPointError(
                f"ES-MoE {where}got non-finite gate logits (NaN/Inf): the run diverged; lower the learning rate "
                "or resume from an earlier checkpoint"
            )
        self._state.routing = routing.detached()
        self._state.aux_loss = routing.aux_loss
        indices, weights = routing.indices, routing.weights
        if self.shared:  # the shared expert: the bank's last, weight 1 for every image
            indices = torch.cat([indices, torch.full_like(indices[:, :1], self.num_experts)], dim=1)
            weights = torch.cat([weights, torch.ones_like(weights[:, :1])], dim=1)
        run = resolve(self._strategy, self.training, x.shape[0], all_experts=self.router.static)
        y = self.experts(x, indices, weights, run, self.norm)
        return x + y if self.add else y

    def extra_repr(self) -> str:
        kernels = ",".join(map(str, self.experts.kernel_sizes))
        return (
            f"{self.c1}, {self.c2}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"kernels={kernels}, shortcut={self.add}, strategy={self._strategy}"
            + (", shared=True" if self.shared else "")
        )
