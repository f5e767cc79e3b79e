"""Execution strategies: how an ES-MoE block computes ``Norm(sum_k w_k * Expert_{i_k}(x))``.

Routing decides *which* experts and *how much*; a strategy decides *how* to run them. Every strategy
returns the same tensor (tests compare each one with a plain loop over experts).

Eager (training and inference):

- ``select``  batch-1 inference: read the K chosen indices on the host and run only those experts.
              With a batch it runs as ``grouped``.
- ``grouped`` batches and training: each chosen expert runs once, on the samples that chose it.
              Loops over experts (at most E iterations), never over samples.
- ``dense``   baseline: every expert on every sample, unchosen ones weighted by zero.

Graph (eval only; what export traces; every BatchNorm folded into the weights, see ``fusion.py``;
no Loop or NonZero; the batch must be static, images are unrolled one by one where needed):

- ``slice``   each expert's static-weight depthwise convolution runs on ``x[:chosen_e]``, a batch
              of one image or of none (a Range + Gather on the routing); the K hidden maps are
              concatenated and one MatMul applies the gathered pointwise weights, with the routing
              weights and the output norm folded in. Static convolutions keep ONNX Runtime's
              prepacked / NCHWc fast paths, which dynamic-weight convolutions and If subgraphs lose.
- ``gather``  no control flow and no data-dependent shapes: Gather the chosen experts' stacked
              (zero-padded) weights by index, then one depthwise and one pointwise convolution
              whose weights are graph values. For runtimes without data-dependent shapes.
- ``branch``  one ``If`` per expert and image around static-weight convolutions: only the taken
              branches run.
- ``slots``   one slot per chosen expert, in ascending expert order, so that slot j can only hold
              experts ``j .. E-K+j``: each slot gathers its kernel from those (zero-padded to the
              largest of them only) and runs a depthwise and a pointwise convolution with
              graph-valued weights on ``x`` itself. Static shapes and no layout change: what
              OpenVINO's CPU plugin runs fastest.
- ``masked``  dense-routed for converters without TopK, Gather, Scatter or comparisons (ncnn): the
              router's :meth:`masked` form gives a ``(B, E)`` weight matrix from arithmetic alone, and
              every expert runs with its weight (zero for the unchosen): the same function.

``auto`` is ``select`` for a batch of one in eval mode, ``grouped`` otherwise, and while a graph is
being traced for export, ``slice`` (the fastest in ONNX Runtime; README "Export" has the numbers).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from .depthwise import depthwise_conv2d
from .fusion import fold
from .routers.base import is_exporting, is_tracing

Strategy = Callable[..., torch.Tensor]
EAGER_STRATEGIES = ("select", "grouped", "dense")  # training and eager inference
GRAPH_STRATEGIES = ("slice", "gather", "branch", "slots")  # eval only, BatchNorms folded: what export traces
# what `export strategy=` accepts; dense and masked compute every expert, the unchosen weighted by zero
EXPORT_STRATEGIES = (*GRAPH_STRATEGIES, "dense", "masked")
TRACE_DEFAULT = "slice"


def run_select(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Batch of one: the chosen experts in weight order, natively, nothing else."""
    if x.shape[0] != 1:
        return run_grouped(bank, norm, x, indices, weights)
    out = None
    for e, w in zip(indices[0].tolist(), weights[0].unbind()):
        if w != 0:  # a slot left empty (variable K) or dropped (capacity) runs nothing
            y = bank.expert(e, x) * w
            out = y if out is None else out + y
    return norm(x.new_zeros(1, bank.c2, x.shape[2], x.shape[3]) if out is None else out)


def run_grouped(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each expert runs on exactly the samples that routed to it; results are added back in place
    (``index_add_``: one output buffer, not a copy per expert; autograd records it as it does ``index_add``)."""
    out = x.new_zeros(x.shape[0], bank.c2, x.shape[2], x.shape[3])
    for e in torch.unique(indices).tolist():
        rows, slots = ((indices == e) & (weights != 0)).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        # every sample, in order: no gathered copy; else index_select, whose backward (an index_add into zeros)
        # took 3% off the training step against x[rows]'s (an accumulating index_put)
        xe = x if rows.numel() == x.shape[0] else x.index_select(0, rows)
        y = bank.expert(e, xe) * weights[rows, slots].view(-1, 1, 1, 1).to(x.dtype)
        out.index_add_(0, rows, y)
    return norm(out)


def run_dense(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """All E experts on all samples; the masked weight matrix zeroes the unchosen ones."""
    return run_weighted(bank, norm, x, indices, _dense_weights(bank, indices, weights, x.dtype))


def run_weighted(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Every expert, weighted by its column of the ``(B, E)`` ``weights`` (expert order; ``indices`` unused)."""
    return norm(sum(bank.expert(e, x) * weights[:, e].view(-1, 1, 1, 1) for e in range(bank.num_experts)))


def _static_depthwise(bank, f, e: int, x: torch.Tensor) -> torch.Tensor:
    """Folded expert ``e``'s depthwise convolution in a graph strategy (tiled where the export asks)."""
    depthwise, dw_bias, _ = f.kernels(e)
    tile = getattr(bank, "depthwise_tile", None)
    return depthwise_conv2d(x, depthwise, fft_backward=False, bias=dw_bias, tile=tile, blocks=f.depthwise_blocks(e))


def run_static(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """K == E: every expert runs, so no selection at all: static weights, no TopK, no Gather."""
    f = fold(bank, norm)
    out = f.bias.view(1, -1, 1, 1)
    for e in range(bank.num_experts):
        h = F.silu(_static_depthwise(bank, f, e, x))
        out = out + F.conv2d(h, f.kernels(e)[2]) * weights[:, e].view(-1, 1, 1, 1)
    return out


def run_gather(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Gather the chosen experts' folded weights; the batch rides in the convolution groups."""
    f = fold(bank, norm)
    b, c1, h, w = x.shape
    k = indices.shape[1]
    idx = indices.reshape(-1)  # (B*K,) sample-major
    dw = f.padded_depthwise(bank.k_max).index_select(0, idx).reshape(b * k * c1, 1, bank.k_max, bank.k_max)
    dw_bias = f.dw_bias.index_select(0, idx).reshape(-1)
    xs = x.unsqueeze(1).expand(b, k, c1, h, w).reshape(1, b * k * c1, h, w)
    hidden = F.silu(F.conv2d(xs, dw, dw_bias, padding=bank.k_max // 2, groups=b * k * c1))
    pw = f.pointwise.index_select(0, idx).reshape(b, k, bank.c2, c1) * weights.reshape(b, k, 1, 1).to(x.dtype)
    pw = pw.permute(0, 2, 1, 3).reshape(b * bank.c2, k * c1, 1, 1)
    out = F.conv2d(hidden, pw, groups=b).reshape(b, bank.c2, h, w)
    return out + f.bias.view(1, -1, 1, 1)


def _per_image(run: Strategy) -> Strategy:
    """Run a batch-1 graph strategy image by image (unrolled while tracing: the batch must be static)."""

    def per_image(bank, norm, x, indices, weights):
        if x.shape[0] == 1:
            return run(bank, norm, x, indices, weights)
        return torch.cat([run(bank, norm, x[i : i + 1], indices[i : i + 1], weights[i : i + 1]) for i in range(len(x))])

    per_image.__doc__ = run.__doc__
    return per_image


def _dense_weights(bank, indices: torch.Tensor, weights: torch.Tensor, dtype) -> torch.Tensor:
    return torch.zeros(indices.shape[0], bank.num_experts, dtype=dtype, device=indices.device).scatter(
        1, indices, weights.to(dtype)
    )


@_per_image
def run_slice(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Static depthwise convs on a batch of one or none, then one MatMul with the gathered pointwise weights."""
    f = fold(bank, norm)
    e_all = bank.num_experts
    dense = _dense_weights(bank, indices, weights, x.dtype)[0]
    chosen = (dense != 0).to(torch.int64)  # 1 for the experts that run, else 0 (empty slots run nothing)
    hidden = []
    for e in range(bank.num_experts):
        xe = x.index_select(0, torch.arange(chosen[e], device=x.device))  # (1 or 0, C1, H, W)
        hidden.append(F.silu(_static_depthwise(bank, f, e, xe)))
    # The concatenation is in ascending expert order: rank the chosen experts first, lowest index first
    # (a TopK on a static key, no NonZero), and keep as many as ran.
    key = chosen * (e_all - torch.arange(e_all, device=x.device))
    order = key.topk(e_all).indices.index_select(0, torch.arange(chosen.sum(), device=x.device))
    pw = f.pointwise.index_select(0, order) * dense.index_select(0, order).view(-1, 1, 1)
    pw = pw.permute(1, 0, 2).reshape(bank.c2, -1)
    out = torch.matmul(pw, torch.cat(hidden).reshape(pw.shape[1], x.shape[2] * x.shape[3]))
    return out.reshape(1, bank.c2, x.shape[2], x.shape[3]) + f.bias.view(1, -1, 1, 1)


def _expert_if_chosen(
    acc: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    depthwise: torch.Tensor,
    dw_bias: torch.Tensor,
    pointwise: torch.Tensor,
    pad: int,
    groups: int,
) -> torch.Tensor:
    """Scripted so that tracing keeps the condition: exported as one ONNX ``If`` per expert."""
    if bool(weight > 0):
        h = F.silu(F.conv2d(x, depthwise, dw_bias, padding=[pad, pad], groups=groups))
        acc = acc + F.conv2d(h, pointwise) * weight
    return acc


with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated; it is what keeps the If in a trace
    warnings.simplefilter("ignore", FutureWarning)
    _expert_if_chosen = torch.jit.script(_expert_if_chosen)


@_per_image
def run_branch(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One conditional per expert with static weights; the unchosen experts' branches do nothing."""
    f = fold(bank, norm)
    dense = _dense_weights(bank, indices, weights, x.dtype)
    out = f.bias.view(1, -1, 1, 1).expand(1, bank.c2, x.shape[2], x.shape[3])
    for e, k in enumerate(bank.kernel_sizes):
        depthwise, dw_bias, pw = f.kernels(e)
        out = _expert_if_chosen(out, x, dense[0, e], depthwise, dw_bias, pw, k // 2, bank.c1)
    return out


def _ascending_choice(dense: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` distinct experts in ascending index order: the chosen ones (nonzero weight), filled up with the
    lowest unchosen indices where a router chose fewer (those run weighted by zero)."""
    e_all = dense.shape[0]
    key = (dense != 0).to(torch.int64) * (2 * e_all) + (e_all - torch.arange(e_all, device=dense.device))
    return key.topk(k).indices.sort().values


@_per_image
def run_slots(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """K slots, one per chosen expert in ascending order; static shapes, gathered weights.

    In ascending order the j-th of K experts can only be one of ``j .. E-K+j``, so slot j gathers its
    depthwise kernel from those experts' kernels zero-padded to the largest of them (for 3/5/7/9, top-2:
    7x7 then 9x9), not from all E padded to the largest as ``gather`` does. Each slot is a depthwise and a
    pointwise convolution straight on ``x``: no copy of the input, no data-dependent shape."""
    f = fold(bank, norm)
    k = indices.shape[1]
    dense = _dense_weights(bank, indices, weights, x.dtype)[0]
    order = _ascending_choice(dense, k)
    out = f.bias.view(1, -1, 1, 1)
    for j in range(k):
        first, last = j, bank.num_experts - k + j
        size = max(bank.kernel_sizes[first : last + 1])
        e = order[j : j + 1]
        table = f.padded_depthwise(size, range(first, last + 1))
        depthwise = table.index_select(0, e - first).reshape(bank.c1, 1, size, size)  # a shape ONNX can read
        h = F.silu(F.conv2d(x, depthwise, f.dw_bias.index_select(0, e).reshape(-1), padding=size // 2, groups=bank.c1))
        pointwise = f.pointwise.index_select(0, e) * dense.index_select(0, e).view(1, 1, 1)
        out = out + F.conv2d(h, pointwise.reshape(bank.c2, bank.c1, 1, 1))
    return out


@_per_image
def run_unfolded(bank, norm, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Graph form for banks whose BatchNorms do not fold (the releases' layouts): each expert on a batch of
    one image or of none (as ``slice``), unfolded, the weighted outputs summed, then the norm."""
    dense = _dense_weights(bank, indices, weights, x.dtype)[0]
    chosen = (dense != 0).to(torch.int64)
    parts = []
    for e in range(bank.num_experts):
        take = torch.arange(chosen[e], device=x.device)
        parts.append(bank.expert(e, x.index_select(0, take)) * dense.index_select(0, take).view(-1, 1, 1, 1))
    return norm(torch.cat(parts).sum(0, keepdim=True))


STRATEGIES: dict[str, Strategy] = {
    "select": run_select,
    "grouped": run_grouped,
    "dense": run_dense,
    "slice": run_slice,
    "gather": run_gather,
    "branch": run_branch,
    "slots": run_slots,
    "masked": run_static,  # weights already (B, E) in expert order (``Router.masked``)
}


def pick_strategy(name: str, training: bool, batch: int, all_experts: bool = False, foldable: bool = True) -> Strategy:
    """The strategy function for ``name`` (``auto`` picks per mode, batch size and tracing).

    ``foldable=False`` (a bank whose BatchNorms do not fold): every graph strategy traces
    :func:`run_unfolded`, or ``dense`` when every expert runs anyway."""
    if name == "auto":
        if training:
            name = "grouped"
        elif is_tracing():
            name = TRACE_DEFAULT
        else:
            name = "select" if batch == 1 else "grouped"
    if name == "masked":
        if training:
            raise ValueError("the 'masked' ES-MoE strategy is for eval / export only")
        return run_static if foldable else run_weighted
    if name in GRAPH_STRATEGIES:
        if name == "branch" and is_exporting():
            raise ValueError(
                "the 'branch' ES-MoE strategy needs the TorchScript tracer (torch.onnx.export(dynamo=False)); "
                "torch.export cannot capture its data-dependent If: use strategy=slice, gather or dense"
            )
        if training:
            raise ValueError(f"the '{name}' ES-MoE strategy folds BatchNorms and is for eval / export only")
        if not foldable:
            return run_dense if all_experts else run_unfolded
        if all_experts:  # K == E: nothing to select, export the plain static graph
            return run_static
    return STRATEGIES[name]
