"""ES-MoE block: every execution strategy against a plain loop over experts, routing, gradients, copies."""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
import torch
import torch.nn.functional as F
from conftest import loop_reference, randomize_stats

from yolo_master.nn import STRATEGIES, ESMoE
from yolo_master.nn.cost import active_params
from yolo_master.nn.routers import load_balancing_loss, top_k
from yolo_master.nn.routers.base import scatter_dense
from yolo_master.nn.routers.topk import hard_top_k, masked_top_k, soft_top_k

ALL_STRATEGIES = ["auto", *STRATEGIES]
EAGER = ["auto", "select", "grouped", "dense"]


def _steer_with_onehot(block: ESMoE, logits: torch.Tensor, x: torch.Tensor) -> None:
    """Make image b's gate logits equal ``logits[b]``: channel b of image b is 1 (a one-hot after GAP),
    hidden unit b fires only for it, and the last gate layer maps that unit to the wanted logits."""
    batch = x.shape[0]
    with torch.no_grad():
        x[:, :batch] = 0.0
        for b in range(batch):
            x[b, b] = 1.0  # channel b is 1 for image b only: GAP gives a one-hot vector
        block.router.reduce.weight.zero_()
        block.router.reduce.bias.zero_()
        for b in range(batch):
            block.router.reduce.weight[b, b] = 20.0  # hidden b = SiLU(20) ~ 20 for image b, 0 otherwise
        block.router.logits.weight.zero_()
        block.router.logits.bias.zero_()
        act = F.silu(torch.tensor(20.0))
        for b in range(batch):
            block.router.logits.weight[:, b, 0, 0] = logits[b] / act


def chosen_experts(block: ESMoE, image: int = 0) -> list[int]:
    """The experts ``image`` ran, as the routing records them: ``indices`` in rank order, or under
    ``masked`` (every expert in expert order, the unchosen with weight 0) the non-zero ones."""
    r = block.last_routing
    if block.strategy == "masked":
        return [i for i, w in zip(r.indices[image].tolist(), r.weights[image].tolist()) if w != 0]
    return r.indices[image].tolist()


def expected_experts(block: ESMoE, route) -> list[int]:
    return sorted(route) if block.strategy == "masked" else list(route)


def routes_for(e: int, k: int) -> list[tuple[int, ...]]:
    return list(itertools.permutations(range(e), k)) if e <= 3 else list(itertools.combinations(range(e), k))


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("e,k", [(2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3), (4, 4)])
def test_every_strategy_matches_loop_for_every_combination(strategy, e, k):
    torch.manual_seed(e * 10 + k)
    block = randomize_stats(ESMoE(16, 16, e, k, strategy=strategy)).eval()
    for route in routes_for(e, k):
        x = torch.randn(1, 16, 9, 9)
        _steer_with_onehot(block, torch.tensor([[10.0 - route.index(i) if i in route else -20.0 for i in range(e)]]), x)
        with torch.no_grad():
            out, ref = block(x), loop_reference(block, x)
        expected = expected_experts(block, route) if k < e else list(range(e))  # K == E: every expert, in order
        assert chosen_experts(block) == expected
        assert (out - ref).abs().max() <= 1e-5, (strategy, route)


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("e,k", [(3, 2), (4, 2), (4, 1), (4, 3)])
def test_batch_with_different_routes_per_image(strategy, e, k):
    torch.manual_seed(1)
    block = randomize_stats(ESMoE(16, 24, e, k, strategy=strategy)).eval()
    combos = routes_for(e, k)
    batch = 3
    x = torch.randn(batch, 16, 7, 7)
    logits = torch.full((batch, e), -20.0)
    chosen = [combos[i % len(combos)] for i in (0, len(combos) // 2, len(combos) - 1)]
    for b, route in enumerate(chosen):
        for rank, idx in enumerate(route):
            logits[b, idx] = 10.0 - rank
    _steer_with_onehot(block, logits, x)
    with torch.no_grad():
        out, ref = block(x), loop_reference(block, x)
    assert [chosen_experts(block, b) for b in range(batch)] == [expected_experts(block, r) for r in chosen]
    assert len({tuple(r) for r in chosen}) > 1  # the batch really mixes routes
    assert out.shape == (batch, 24, 7, 7)
    assert (out - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_soft_and_hard_top_k_give_the_same_weights(k):
    torch.manual_seed(k)
    logits = torch.randn(64, 4) * 3
    ws, is_ = soft_top_k(logits, k)
    wh, ih = hard_top_k(logits, k)
    assert torch.equal(is_, ih)
    assert torch.allclose(ws, wh, atol=1e-6)
    assert torch.allclose(ws.sum(-1), torch.ones(64), atol=1e-6)


@pytest.mark.parametrize("e,k", [(2, 1), (4, 2), (4, 3), (8, 2), (16, 4)])
def test_masked_top_k_is_hard_top_k_from_arithmetic_alone(e, k):
    """The ``masked`` export routing equals eq. 9 scattered over the experts, ties to the lower index."""
    torch.manual_seed(e + k)
    logits = torch.randn(64, e) * 3
    logits[:16] = logits[:16].round()  # many ties
    w, idx = hard_top_k(logits, k)
    assert torch.allclose(masked_top_k(logits, k), scatter_dense(idx, w, e), atol=1e-6)
    assert torch.equal(masked_top_k(logits, k, comparisons=True), masked_top_k(logits, k))
    bias = torch.randn(e)  # loss-free balancing: shifts the choice, not the weights
    w, idx = hard_top_k(logits, k, bias)
    assert torch.allclose(masked_top_k(logits, k, bias), scatter_dense(idx, w, e), atol=1e-6)
    assert torch.equal(masked_top_k(logits, k, bias, comparisons=True), masked_top_k(logits, k, bias))


def test_train_and_eval_routing_give_the_same_output_with_bn_held():
    torch.manual_seed(0)
    block = randomize_stats(ESMoE(16, 16, 4, 2))
    x = torch.randn(4, 16, 8, 8)
    block.eval()
    with torch.no_grad():
        y_eval = block(x)
        r_eval = block.last_routing
    block.train()
    for m in block.modules():  # hold every BatchNorm fixed: only routing differs between modes
        if isinstance(m, torch.nn.BatchNorm2d) or m is block.experts:
            m.eval()
    assert block.router.training  # the router itself runs its training (soft top-K) path
    with torch.no_grad():
        y_train = block(x)
        r_train = block.last_routing
    assert torch.equal(r_eval.indices, r_train.indices)
    assert torch.allclose(r_eval.weights, r_train.weights, atol=1e-6)
    assert (y_eval - y_train).abs().max() <= 1e-5


def test_gradient_reaches_only_chosen_experts_and_the_gate():
    torch.manual_seed(0)
    e, k = 4, 2
    block = ESMoE(8, 8, e, k).train()
    x = torch.randn(2, 8, 6, 6)
    _steer_with_onehot(block, torch.tensor([[10.0, 9.0, -20.0, -20.0], [9.0, -20.0, 10.0, -20.0]]), x)
    y = block(x)
    (y.square().mean() + block.take_aux_loss()).backward()
    bank = block.experts
    used = {0, 1, 2}
    for ex in range(e):
        dw = bank.dw_weight.grad[:, bank.offsets[ex] : bank.offsets[ex + 1]]
        pw = bank.pw_weight.grad[ex]
        if ex in used:
            assert dw.abs().sum() > 0 and pw.abs().sum() > 0, ex
        else:
            assert dw.abs().sum() == 0 and pw.abs().sum() == 0, ex
    assert block.router.logits.weight.grad.abs().sum() > 0
    assert block.router.reduce.weight.grad is not None


def test_aux_loss_follows_eq_12_13_and_reaches_the_gate():
    dense = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.6, 0.0, 0.4, 0.0]])
    usage = torch.tensor([0.65, 0.15, 0.2, 0.0])
    assert torch.allclose(load_balancing_loss(dense), ((usage - 0.25) ** 2).mean())
    block = ESMoE(8, 8, 4, 2).train()
    block(torch.randn(3, 8, 5, 5))
    aux = block.take_aux_loss()
    assert aux is not None and block.take_aux_loss() is None  # handed over once
    aux.backward()
    assert block.router.logits.weight.grad.abs().sum() > 0


def test_deepcopy_and_pickle_after_a_training_forward():
    block = ESMoE(8, 8, 4, 2).train()
    block(torch.randn(2, 8, 5, 5)).sum()  # leaves a pending loss with autograd history
    clone = copy.deepcopy(block)
    assert clone.last_routing is None and clone.take_aux_loss() is None
    restored = pickle.loads(pickle.dumps(block))
    assert restored.last_routing is None
    x = torch.randn(1, 8, 5, 5)
    block.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(block(x), restored(x))


def _train_loop_reference(block: ESMoE, x: torch.Tensor) -> torch.Tensor:
    """A training forward the obvious way: each chosen expert on the images that chose it, in NCHW, its
    BatchNorm on those images' statistics, the weighted outputs added per image, then the norm."""
    routing = block.router(x)
    bank = block.experts
    out = torch.zeros(x.shape[0], bank.c2, *x.shape[2:])
    for e in range(bank.num_experts):
        rows, slots = (routing.indices == e).nonzero(as_tuple=True)
        if len(rows) == 0:
            continue
        k = bank.kernel_sizes[e]
        dw = bank.dw_weight[:, bank.offsets[e] : bank.offsets[e + 1]].reshape(bank.c1, 1, k, k)
        h = F.conv2d(x[rows], dw, padding=k // 2, groups=bank.c1)
        h = F.silu(F.batch_norm(h, None, None, bank.bn_weight[e], bank.bn_bias[e], True, 0.0, bank.bn_eps))
        y = F.conv2d(h, bank.pw_weight[e][:, :, None, None]) * routing.weights[rows, slots].view(-1, 1, 1, 1)
        out = out.index_add(0, rows, y)
    y = block.norm(out)
    return x + y if block.add else y


def test_training_forward_and_backward_match_a_plain_loop():
    """The training path (grouped dispatch, the experts' FFT-backed depthwise backward) against a plain
    loop with ``F.conv2d``: same outputs and the same gradients for the input and every weight."""
    torch.manual_seed(0)
    block = ESMoE(16, 16, 4, 2).train()
    assert block.experts.fft_backward
    x = torch.randn(6, 16, 12, 12)
    _steer_with_onehot(block, torch.tensor([[9.0, 8.0, 0, 0], [0, 9, 8, 0], [0, 0, 9, 8]] * 2), x)
    grads = []
    for run in (block, lambda t: _train_loop_reference(block, t)):
        block.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = run(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append([y.detach(), xi.grad, *(p.grad.clone() for p in block.parameters())])
    assert len(block.last_routing.indices.unique()) == 4  # every expert (3x3 .. 9x9) ran on a subset
    for fast, ref in zip(*grads):
        assert (fast - ref).abs().max() <= 1e-4 * ref.abs().max().clamp_min(1e-6)


def test_channels_last_conversion_keeps_outputs():
    block = ESMoE(8, 8, 4, 2).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        ref = block(x)
        block.to(memory_format=torch.channels_last)
        assert torch.allclose(block(x.to(memory_format=torch.channels_last)), ref, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_experts": 2, "top_k": 3}, "exceeds num_experts"),
        ({"num_experts": 0, "top_k": 1}, r"num_experts \(E\) must be >= 1"),
        ({"num_experts": 4, "top_k": 0}, r"top_k \(K\) must be >= 1"),
        ({"num_experts": 4.0, "top_k": 2}, "must be an integer"),
        ({"num_experts": 2, "top_k": 1, "kernel_sizes": (3, 4)}, "odd positive"),
        ({"num_experts": 2, "top_k": 1, "kernel_sizes": (3,)}, "one kernel size per expert"),
        ({"strategy": "magic"}, "unknown ESMoE strategy"),
    ],
)
def test_invalid_arguments_raise_a_readable_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ESMoE(8, 8, **kwargs)


@pytest.mark.parametrize("strategy", ["slice", "gather", "branch", "slots"])
def test_graph_strategies_are_eval_only(strategy):
    block = ESMoE(8, 8, 4, 2, strategy=strategy).train()
    with pytest.raises(ValueError, match="eval / export only"):
        block(torch.randn(1, 8, 5, 5))


def test_repr_shows_experts_and_strategy():
    text = repr(ESMoE(8, 16, 4, 2, strategy="grouped"))
    assert "num_experts=4" in text and "top_k=2" in text and "kernels=3,5,7,9" in text and "grouped" in text


def test_active_params_count_k_of_e_experts():
    block = ESMoE(32, 32, 4, 2)
    total = sum(p.numel() for p in block.parameters())
    experts = sum(block.experts.expert_params(e) for e in range(4))
    assert active_params(block) == total - experts // 2


def test_ties_go_to_the_lower_expert_index_every_time():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0], [2.0, 2.0, 2.0, 2.0], [0.5, 0.5, 1.0, 0.5]])
    for _ in range(5):
        for select in (soft_top_k, hard_top_k):
            _, idx = select(logits, 2)
            assert idx.tolist() == [[1, 2], [0, 1], [2, 0]]
    assert top_k(logits, 3)[1].tolist() == [[1, 2, 3], [0, 1, 2], [2, 0, 1]]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gate_logits_fail_with_the_layer_named(bad):
    block = ESMoE(8, 8, 4, 2).train()  # a diverging training step
    block.i = 6  # set by the model parser for layers of a model
    with torch.no_grad():
        block.router.logits.bias[1] = bad
    with pytest.raises(FloatingPointError, match="ESMoE layer 6 got non-finite router logits"):
        block(torch.randn(1, 8, 5, 5))
