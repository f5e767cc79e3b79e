"""Execution strategies: how an :class:`ExpertBank` computes ``sum_k w_k * Expert_{i_k}(x)``.

Routing decides *which* experts and *how much*; a strategy decides *how* to run them. Every strategy
returns the same tensor (tests compare each one with a plain loop over experts):

- ``select``  batch-1 inference: read the K chosen indices on the host and run only those experts.
              With a batch it runs as ``grouped``.
- ``grouped`` batches and training: each chosen expert runs once, on the samples that chose it.
              Loops over experts (at most E iterations), never over samples.
- ``dense``   baseline: every expert on every sample, unchosen ones weighted by zero.
- ``auto``    ``select`` for a batch of one in eval mode, ``grouped`` otherwise.

While a graph is being traced for export, ``auto`` runs ``dense``: host-side indexing would bake the
dummy input's route into the graph. Export strategies that keep routing sparse inside the graph
(``gather``, ``branch``) are separate work.
"""

from __future__ import annotations

from typing import Callable

import torch

Strategy = Callable[..., torch.Tensor]


def run_select(bank, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Batch of one: the chosen experts in weight order, natively, nothing else."""
    if x.shape[0] != 1:
        return run_grouped(bank, x, indices, weights)
    out = None
    for e, w in zip(indices[0].tolist(), weights[0].unbind()):
        y = bank.expert(e, x) * w
        out = y if out is None else out + y
    return out


def run_grouped(bank, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each expert runs on exactly the samples that routed to it; results are added back in place."""
    out = x.new_zeros(x.shape[0], bank.c2, x.shape[2], x.shape[3])
    for e in torch.unique(indices).tolist():
        rows, slots = (indices == e).nonzero(as_tuple=True)
        y = bank.expert(e, x[rows]) * weights[rows, slots].view(-1, 1, 1, 1).to(x.dtype)
        out = out.index_add(0, rows, y)
    return out


def run_dense(bank, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """All E experts on all samples; the masked weight matrix zeroes the unchosen ones."""
    dense = torch.zeros(x.shape[0], bank.num_experts, dtype=x.dtype, device=x.device)
    dense = dense.scatter(1, indices, weights.to(x.dtype))
    return sum(bank.expert(e, x) * dense[:, e].view(-1, 1, 1, 1) for e in range(bank.num_experts))


STRATEGIES: dict[str, Strategy] = {"select": run_select, "grouped": run_grouped, "dense": run_dense}


def resolve(name: str, training: bool, batch: int) -> Strategy:
    """The strategy function for ``name`` (``auto`` picks per mode and batch size)."""
    if name == "auto":
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            name = "dense"
        else:
            name = "select" if (not training and batch == 1) else "grouped"
    return STRATEGIES[name]
