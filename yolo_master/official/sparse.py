"""From a dense official ES-MoE model (softmax over all experts) to a sparse top-K one with the same weights.

The v0 release mixes its 3 experts by softmax; evaluating it with top-K directly collapses its accuracy
(the release's own attempts: about 0.35 -> 0.01 mAP). :func:`with_top_k` builds the same architecture
with K experts per image (ES-MoE's soft top-K in training, hard top-K at inference) and copies every
tensor: K does not change a single weight's shape. Fine-tuning that model (``yolo-master train``) then
learns to route; README "Pretrained weights" has what it keeps.
"""

from __future__ import annotations

import copy

from torch import nn

from ..integration.runtime import quiet_logs
from ..models import TASK_MODELS
from ..nn import ESMoEv0


def with_top_k(net: nn.Module, top_k: int) -> nn.Module:
    """A copy of ``net`` whose ``ESMoEv0`` layers run ``top_k`` of their experts per image."""
    layers = {i for i, m in enumerate(net.model) if isinstance(m, ESMoEv0)}
    if not layers:
        raise ValueError("top_k= applies to ESMoEv0 layers (the v0 release's blocks); this model has none")
    d = copy.deepcopy(net.yaml)
    rows = d["backbone"] + d["head"]
    for i in layers:
        experts = net.model[i].num_experts
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= experts:
            raise ValueError(f"top_k={top_k} must be an integer between 1 and the layers' {experts} experts")
        rows[i][3] = [rows[i][3][0], experts] + ([top_k] if top_k < experts else [])
    with quiet_logs():
        sparse = TASK_MODELS[net.task](d, nc=net.yaml.get("nc"), ch=d.get("channels", 3), verbose=False)
    sparse.load_state_dict(net.state_dict(), strict=True)
    for i in layers:
        sparse.model[i].experts.bn_eps = net.model[i].experts.bn_eps
        sparse.model[i].experts.bn_momentum = net.model[i].experts.bn_momentum
    sparse.names, sparse.task, sparse.args = net.names, net.task, dict(getattr(net, "args", {}) or {})
    return sparse.eval()
