"""ES-MoE block (YOLO-Master, section 3): router + expert bank + execution strategy + norm.

``Y = Norm(sum_{i in T_K} w_i * Expert_i(X))`` (eq. 2), with an identity shortcut when the block
preserves channels (``shortcut=True``; set it False for the paper's exact form). The shortcut is our
choice: a freshly initialised router otherwise perturbs every feature the later stages read.

The router comes from the ``moe:`` options (``options.py``, ``routers/``), fixed at construction:

- shared expert (GigaMoE): ``Y = Norm(Shared(X) + sum_k w_k E_k(X))``, a 3x3 expert that always runs.
  GigaMoE keeps the peak cost of the dense FFN by giving each of its ``k_max + 1`` experts
  ``1 / (k_max + 1)`` of the FFN's hidden width. Our experts have no hidden width to divide (each maps
  ``c1 -> c2`` through one depthwise and one pointwise convolution), so the budget is kept by count:
  the shared expert takes one of the K slots (``K - 1`` routed), and the block's peak cost stays that
  of the plain top-K block. It is held as the last expert of the bank, chosen with weight 1 for every
  image, so every execution and export strategy runs it unchanged.
- variable K, capacity, bias balancing, soft mixture: the router's (``routers/``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .block import RoutedBlock, Transient, check_int, check_shape_args  # noqa: F401  (Transient: old checkpoints name it here)
from .dispatch import EAGER_STRATEGIES, EXPORT_STRATEGIES, pick_strategy
from .experts import ExpertBank, default_kernel_sizes
from .options import SHARED_KERNEL, MoEOptions
from .routers import create_router


def check_moe_args(num_experts, top_k, kernel_sizes, owner: str = "ESMoE") -> tuple[int, int, tuple[int, ...]]:
    """Validate E, K and kernels; raise one readable ``ValueError`` naming the fix."""
    num_experts = check_int(owner, "num_experts (E)", num_experts, 1)
    top_k = check_int(owner, "top_k (K)", top_k, 1)
    if top_k > num_experts:
        raise ValueError(f"{owner} top_k={top_k} exceeds num_experts={num_experts}: choose 1 <= K <= E")
    kernel_sizes = default_kernel_sizes(num_experts) if kernel_sizes is None else tuple(kernel_sizes)
    if len(kernel_sizes) != num_experts:
        raise ValueError(f"{owner} needs one kernel size per expert: got {len(kernel_sizes)} for E={num_experts}")
    for k in kernel_sizes:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"{owner} kernel sizes must be odd positive integers, got {k!r} in {kernel_sizes}")
    return num_experts, top_k, kernel_sizes


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
            ``slice``, ``gather``, ``branch``, ``slots``, ``masked`` (graph forms for export); see ``dispatch.py``.
        options: the model YAML's ``moe:`` section (router, shared expert, ...); default the paper's.

    Shape:
        ``(B, c1, H, W) -> (B, c2, H, W)``; one routing decision per image.
    """

    strategies = ("auto", *EAGER_STRATEGIES, *(s for s in EXPORT_STRATEGIES if s not in EAGER_STRATEGIES))
    out_act = False  # a SiLU after the norm (the v0 release's block has one; ours does not)

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
        options: MoEOptions | None = None,
    ) -> None:
        super().__init__()
        c1, c2, reduction = check_shape_args("ESMoE", c1, c2, reduction)
        num_experts, top_k, kernel_sizes = check_moe_args(num_experts, top_k, kernel_sizes)
        options = options or MoEOptions()
        routed_k = top_k
        if options.shared and options.router_kind == "topk":
            if top_k < 2:
                raise ValueError(
                    f"ESMoE has K={top_k}: 'shared: true' takes one of the K slots, so K must be >= 2 (or give k_dist)"
                )
            routed_k = top_k - 1
        self.c1, self.c2, self.options = c1, c2, options
        try:
            self.router = create_router(
                options.router_kind, c1, num_experts, routed_k, reduction, **options.router_kwargs()
            )
        except ValueError as e:
            raise ValueError(f"ESMoE {e}") from None
        shared = (SHARED_KERNEL,) if options.shared else ()
        self.experts = self.build_experts(c1, c2, (*kernel_sizes, *shared), len(shared))
        self.norm = nn.BatchNorm2d(c2)
        self.add = shortcut and c1 == c2
        self.strategy = strategy

    def build_experts(self, c1: int, c2: int, kernel_sizes: tuple[int, ...], num_shared: int) -> ExpertBank:
        """The expert bank (a block of another expert layout overrides this)."""
        return ExpertBank(c1, c2, kernel_sizes, num_shared=num_shared)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "options" not in self.__dict__:  # pickled before options existed: configured after construction
            from .legacy import upgrade_esmoe

            upgrade_esmoe(self)

    @property
    def shared(self) -> bool:
        """True when an always-on shared expert runs next to the routed ones."""
        return self.experts.num_shared > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.route(x)
        self.check_finite(routing.logits)
        self.record(routing, routing.aux_loss)
        indices, weights = routing.indices, routing.weights
        if self.shared:  # the shared expert: the bank's last, weight 1 for every image
            indices = torch.cat([indices, torch.full_like(indices[:, :1], self.num_experts)], dim=1)
            weights = torch.cat([weights, torch.ones_like(weights[:, :1])], dim=1)
        all_experts, foldable = self.router.all_experts, self.experts.foldable
        run = pick_strategy(self._strategy, self.training, x.shape[0], all_experts=all_experts, foldable=foldable)
        y = run(self.experts, self.norm, x, indices, weights)
        if self.out_act:
            y = F.silu(y)
        return x + y if self.add else y

    def extra_repr(self) -> str:
        kernels = ",".join(map(str, self.experts.kernel_sizes))
        return (
            f"{self.c1}, {self.c2}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"kernels={kernels}, shortcut={self.add}, strategy={self._strategy}, router={type(self.router).__name__}"
            + (", shared=True" if self.shared else "")
        )
