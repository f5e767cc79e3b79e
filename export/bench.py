"""Runtime-only latency of exported models, side by side: ONNX (ONNX Runtime, CPU), OpenVINO (CPU)
and TensorRT engines.

    python export/bench.py a.onnx [b.onnx ...] [--threads 2] [--runs 50] [--out reports/ort.md]
    python export/bench.py a_openvino_model/ b.onnx --rounds 3   # OpenVINO folders (or .xml) too
    python export/bench.py yolo-master-n.engine yolo12n.engine          # on a machine with a GPU

Standalone on purpose (no torch, no yolo_master import), so it runs on a bare deployment box: it
needs only this file and ``yolo_master/export/timing.py`` (run by path, not imported through the
package; copy both, keeping their relative places, or pass ``--timing PATH``). Every model is timed in
its own process (OpenVINO's worker threads keep spinning after a run and
slow ONNX Runtime several-fold when both live in one process), in ``--rounds`` interleaved rounds;
the table keeps each model's fastest round (the least disturbed by the rest of the machine).
Each model runs on random input of its own static shape (dynamic axes become 1 / 640), batch as
exported. ``.engine`` files (as Ultralytics writes them: a JSON metadata header, then the serialized
engine) run through the TensorRT Python API with device buffers from ``cuda-python``; the time
includes a stream synchronisation but no host-device copies. The table lists the median and p90
latency in ms and each model's ratio to the first one.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

TIMING = Path(__file__).resolve().parents[1] / "yolo_master" / "export" / "timing.py"


def load_timing(path: Path):
    """``timing.py`` as a module of its own (the package's ``__init__`` would import torch)."""
    spec = importlib.util.spec_from_file_location("yolo_master_timing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help=".onnx files, OpenVINO folders / .xml, TensorRT .engine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; each model keeps its fastest")
    ap.add_argument("--timing", type=Path, default=TIMING, help="path of yolo_master/export/timing.py")
    ap.add_argument("--out", type=Path, help="also write the table to this markdown file")
    a = ap.parse_args(argv)
    if not a.timing.is_file():
        ap.error(f"'{a.timing}' not found: pass --timing PATH to yolo_master/export/timing.py")
    timing = load_timing(a.timing)
    for path in a.models:
        if timing.runtime_of(path) is None:
            ap.error(f"'{path}' is not an existing .onnx, .engine, OpenVINO .xml or OpenVINO model folder")
    best: dict[Path, tuple[float, float, list[int]]] = {}
    for _ in range(max(a.rounds, 1)):
        for path in a.models:
            try:
                timed = timing.time_in_own_process(path, a.threads, a.warmup, a.runs)
            except RuntimeError as e:  # one line, as for every other failure of this script
                raise SystemExit(str(e)) from None
            if path not in best or timed[0] < best[path][0]:
                best[path] = timed
    rows = [
        f"ONNX Runtime / OpenVINO CPU ({a.threads} threads) / TensorRT; each model in its own process; median of "
        f"{a.runs} runs after {a.warmup} warm-up, fastest of {a.rounds} interleaved round(s)",
        "",
        "| model | runtime | input | median ms | p90 ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    base = None
    for path in a.models:
        median, p90, shape = best[path]
        base = base or median
        shape_text = "x".join(map(str, shape))
        rows.append(
            f"| {path.name} | {timing.RUNTIMES[timing.runtime_of(path)]} | {shape_text} | {median:.2f} | {p90:.2f} "
            f"| {median / base:.2f}x |"
        )
    table = "\n".join(rows)
    print(table)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
