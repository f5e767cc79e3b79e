"""The blocks of the official YOLO-Master releases (github Tencent/YOLO-Master), built from ours.

Their released checkpoints load into models built from these blocks exactly (``official/``); the zoo
has their architectures as ``esmoe-*.yaml`` (v0) and ``v0.1-*.yaml`` (v0.1).

- :class:`ESMoEv0` (the release's ``ES_MOE``): ES-MoE with the expert ``SiLU(BN(PW(DW(x))))``, an
  output ``SiLU(BN(.))`` and no shortcut; the released weights mix all E experts by softmax (``top_k``
  left out), and a ``top_k`` makes it sparse with ES-MoE's soft / hard top-K.
- :class:`SpatialMoE` (the release's ``OptimizedMOEImproved``, YAML ``ModularRouterExpertMoE``): a
  pooled convolutional gate (:class:`~.routers.spatial.SpatialRouter`), E 1x1 MLP experts of which K run,
  plus an always-on shared ``Conv(c1, c2, 1)`` expert; no output norm, no shortcut.
"""

from __future__ import annotations

import torch
from ultralytics.nn.modules import Conv

from .block import RoutedBlock, check_int, check_shape_args
from .dispatch import pick_strategy
from .moe import ESMoE
from .released_experts import MLPExpertBank, PostNormExpertBank
from .routers.spatial import SpatialRouter


class ESMoEv0(ESMoE):
    """The v0 release's ES-MoE, YAML row ``[from, n, ESMoEv0, [c2]]`` (E=3, softmax over all) or ``[c2, E, K]``.

    Args:
        c1, c2: input and output channels.
        num_experts: E (the release: 3, kernels 3/5/7).
        top_k: K; ``None`` (the release) runs every expert with softmax weights.
        reduction, strategy, options: as :class:`~.moe.ESMoE`.
    """

    out_act = True

    def __init__(
        self,
        c1: int,
        c2: int | None = None,
        num_experts: int = 3,
        top_k: int | None = None,
        reduction: int = 8,
        strategy: str = "auto",
        options=None,
    ) -> None:
        top_k = num_experts if top_k is None else top_k
        super().__init__(c1, c2, num_experts, top_k, None, reduction, False, strategy, options)

    def build_experts(self, c1: int, c2: int, kernel_sizes: tuple[int, ...], num_shared: int) -> PostNormExpertBank:
        return PostNormExpertBank(c1, c2, kernel_sizes, num_shared=num_shared)


def _no_norm(x: torch.Tensor) -> torch.Tensor:
    return x


class SpatialMoE(RoutedBlock):
    """The v0.1 release's MoE block, YAML row ``[from, n, SpatialMoE, [c2, E, K]]``.

    ``Y = Shared(X) + sum_{i in T_K} w_i Expert_i(X)``.

    Args:
        c1, c2: input and output channels.
        num_experts: E (the release: 4, 8 and 16 after P3, P4, P5).
        top_k: K (the release: 2).
        reduction: gate width ``max(c1 / reduction, 8)``.
        strategy: execution strategy (as :class:`~.moe.ESMoE`; export runs the unfolded graph form).
    """

    strategies = ESMoE.strategies

    def __init__(
        self, c1: int, c2: int | None = None, num_experts: int = 4, top_k: int = 2, reduction: int = 8, strategy="auto"
    ) -> None:
        super().__init__()
        c1, c2, reduction = check_shape_args("SpatialMoE", c1, c2, reduction)
        num_experts = check_int("SpatialMoE", "num_experts (E)", num_experts, 1)
        top_k = check_int("SpatialMoE", "top_k (K)", top_k, 1)
        if top_k > num_experts:
            raise ValueError(f"SpatialMoE top_k={top_k} exceeds num_experts={num_experts}: choose 1 <= K <= E")
        self.c1, self.c2 = c1, c2
        self.router = SpatialRouter(c1, num_experts, top_k, reduction)
        self.experts = MLPExpertBank(c1, c2, num_experts)
        self.shared = Conv(c1, c2, 1)
        self.strategy = strategy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.route(x)
        self.check_finite(routing.logits)
        self.record(routing, routing.aux_loss)
        run = pick_strategy(self._strategy, self.training, x.shape[0], foldable=False)
        return self.shared(x) + run(self.experts, _no_norm, x, routing.indices, routing.weights)

    def extra_repr(self) -> str:
        return f"{self.c1}, {self.c2}, num_experts={self.num_experts}, top_k={self.top_k}, strategy={self._strategy}"
