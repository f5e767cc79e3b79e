"""DDP on the CPU (gloo, 2 processes): routing statistics and the balancing loss span every rank,
and a DDP-wrapped block needs no ``find_unused_parameters`` even when a rank leaves experts unused."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from yolo_master.engine.routing_stats import RoutingStats
from yolo_master.nn import ESMoE, RoutedBlock
from yolo_master.nn.routers import load_balancing_loss

# Routing weights of 6 images: rank 0 gets the first 3, rank 1 the last 3.
DENSE = torch.tensor(
    [
        [0.7, 0.3, 0.0, 0.0],
        [0.6, 0.4, 0.0, 0.0],
        [0.5, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.8, 0.2],
        [0.0, 0.1, 0.9, 0.0],
        [0.3, 0.0, 0.0, 0.7],
    ]
)


class _Holder(RoutedBlock):
    """A routed layer whose last routing is the given dense weights."""

    def __init__(self, dense):
        super().__init__()
        from types import SimpleNamespace

        self._state.routing = SimpleNamespace(dense=dense)


def _worker(rank: int, world: int, store: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        local = DENSE[rank * 3 : rank * 3 + 3].clone().requires_grad_(True)
        loss = load_balancing_loss(local)
        loss.backward()
        stats = RoutingStats()
        stats.add(torch.nn.Sequential(_Holder(local.detach())))
        stats.reduce()
        # DDP on a block whose experts this rank leaves unused: no unused-parameter error
        torch.manual_seed(0)
        block = ESMoE(8, 8, 4, 2).train()
        with torch.no_grad():
            block.router.logits.weight.zero_()
            block.router.logits.bias.copy_(
                torch.tensor([5.0, 4.0, 0.0, 0.0]) if rank == 0 else torch.tensor([0.0, 0.0, 5.0, 4.0])
            )
        ddp = torch.nn.parallel.DistributedDataParallel(block, find_unused_parameters=False)
        for _ in range(2):  # a second step fails if a parameter went without gradient in the first
            out = ddp(torch.randn(2, 8, 6, 6))
            (out.square().mean() + block.take_aux_loss()).backward()
        results[rank] = (float(loss), local.grad.clone(), stats.summary())
    finally:
        dist.destroy_process_group()


def test_balancing_loss_and_statistics_are_global_across_two_ranks(tmp_path):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), results), nprocs=2, join=True)
    global_batch = DENSE.clone().requires_grad_(True)
    expected = load_balancing_loss(global_batch)
    expected.backward()
    (loss0, grad0, stats0), (loss1, grad1, stats1) = results[0], results[1]
    assert abs(loss0 - float(expected)) < 1e-6 and abs(loss1 - float(expected)) < 1e-6
    # each rank's gradient, summed as DDP's averaging of the world-scaled all_reduce does, is the global one
    assert torch.allclose(torch.cat([grad0, grad1]) / 2, global_batch.grad, atol=1e-6)
    assert stats0 == stats1
    selected, load = stats0["0"]
    assert selected == pytest.approx([4 / 6, 4 / 6, 2 / 6, 2 / 6])
    assert abs(sum(load) - 1) < 1e-6
