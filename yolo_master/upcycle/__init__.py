"""MoE-tuning (Dynamic-DINO, section 3.3): upcycle a trained dense checkpoint into a YOLO-Master model
that starts where the dense one was.

    yolo-master upcycle model=my_yolo12n.pt to=n.yaml experts=4 split=2   # writes my_yolo12n-moe.pt
    yolo-master train model=my_yolo12n-moe.pt data=... epochs=10            # MoE-tuning

- ``nn/ffn_expansion.py`` (one floor down, since model building needs it too): FFNs (YOLO12
  ``ABlock.mlp``, YOLO11 ``PSABlock.ffn``) -> FFN-MoE (``nn/moe_ffn.py``);
- ``insert.py``: ES-MoE blocks inserted as the identity, dense weights matched layer by layer;
- ``report.py``: loaded / new / skipped layers, active / total parameters;
- ``checkpoint.py`` and ``pipeline.py``: reading, writing and the whole recipe.

Only the FFNs are split into experts. C3k2's bottlenecks (two 3x3 convolutions around a residual)
would partition the same way, but as dynamic-weight 3x3 convolutions they lose the fast static-conv
paths at inference; the zoo already places ES-MoE blocks beside those stages.
"""

from .insert import UpcycleError
from .pipeline import upcycle
from .report import UpcycleReport

__all__ = ("UpcycleError", "UpcycleReport", "upcycle")
