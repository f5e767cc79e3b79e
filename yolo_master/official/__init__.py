"""The official YOLO-Master releases' checkpoints (github Tencent/YOLO-Master), loaded into our blocks.

    YOLOMaster("YOLO-Master-EsMoE-N.pt")                  # converted in memory, with a one-line notice
    yolo-master convert model=YOLO-Master-EsMoE-N.pt       # writes YOLO-Master-EsMoE-N-native.pt once

``standins.py`` says what may be unpickled (nothing of the file runs); ``convert.py`` rebuilds the model
from our blocks (``nn/released.py``) and loads every tensor.
"""

from .convert import OfficialCheckpointError, OfficialInfo, is_official_checkpoint, load_official

__all__ = ("OfficialCheckpointError", "OfficialInfo", "is_official_checkpoint", "load_official")
