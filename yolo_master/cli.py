"""The ``yolo-master`` command.

    yolo-master MODE [key=value ...] [--key value ...] [--flag ...]

Modes: train, val, predict, export, routes, benchmark, info, upcycle. Keys are Ultralytics' (``yolo cfg`` lists
them) plus ``moe`` for train. Both spellings work: ``epochs=3``, ``--epochs 3``, ``--epochs=3``; a bare
``--flag`` means ``flag=True``. Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

USAGE = "usage: yolo-master {train,val,predict,export,routes,benchmark,info,upcycle} [key=value ...] [--key value ...]"

MODES = {
    "train": (
        "Train a model (zoo name, YAML or .pt) on a dataset; data=shapes generates an offline one.",
        ["data"],
        "yolo-master train model=n.yaml data=shapes epochs=7 imgsz=160 batch=8 nbs=8 warmup_epochs=1 device=cpu",
    ),
    "val": (
        "Validate a model on a dataset's val split (data defaults to the checkpoint's own).",
        [],
        "yolo-master val model=runs/detect/train/weights/best.pt data=shapes",
    ),
    "predict": (
        "Run detection on images, folders or videos; results are saved under runs/.",
        ["source"],
        "yolo-master predict model=runs/detect/train/weights/best.pt source=path/to/images",
    ),
    "export": (
        "Export a model to another format (onnx, torchscript, engine, ...).",
        ["format"],
        "yolo-master export model=best.pt format=onnx",
    ),
    "routes": (
        "Show which experts each ES-MoE layer chose for each image, as a heat map (routes.png + .csv).",
        ["source"],
        "yolo-master routes model=runs/detect/train/weights/best.pt source=path/to/images",
    ),
    "benchmark": (
        "Measure models side by side: params, active params, GFLOPs, torch and ONNX Runtime CPU latency.",
        [],
        "yolo-master benchmark model=n.yaml compare=yolo11n.yaml,yolo12n.yaml imgsz=640 batch=1",
    ),
    "info": (
        "Print the layer table (ESMoE rows), parameters, active parameters and GFLOPs.",
        [],
        "yolo-master info model=n.yaml imgsz=640",
    ),
    "convert": (
        "Load an official YOLO-Master checkpoint and write a native one; top_k=2 also makes its routing sparse.",
        ["model"],
        "yolo-master convert model=YOLO-Master-EsMoE-N.pt",
    ),
    "upcycle": (
        "Turn a trained dense checkpoint into an MoE model with the same predictions, for MoE-tuning.",
        ["model"],
        "yolo-master upcycle model=my_yolo12n.pt to=n.yaml experts=4 split=2",
    ),
}


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


def _value(text: str):
    """Convert a CLI string like Ultralytics does: ints, floats, booleans, None, else the string."""
    low = text.lower()
    if low in {"true", "false"}:
        return low == "true"
    if low == "none":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


DEPRECATED_FLAGS = {"half", "int8", "boxes", "hide_labels", "hide_conf"}  # true/false keys Ultralytics maps on


def _is_flag(key: str) -> bool:
    """Keys whose bare ``--key`` means ``key=True``: Ultralytics' true / false keys (``--exist_ok``, ``--half``)."""
    from ultralytics.utils import DEFAULT_CFG_DICT

    key = key.replace("-", "_")
    return isinstance(DEFAULT_CFG_DICT.get(key), bool) or key in DEPRECATED_FLAGS


def parse_args(argv: list[str]) -> dict:
    """``key=value`` and ``--key value`` / ``--key=value`` / ``--flag`` tokens -> ``{key: value}``."""
    out: dict = {}

    def put(key: str, value, token: str) -> None:
        key = key.replace("-", "_")
        if not key.isidentifier():
            raise UsageError(f"malformed argument '{token}': expected key=value or --key value")
        if key in out and out[key] != value:
            raise UsageError(f"'{key}' given twice with different values ({out[key]!r} and {value!r}): keep one")
        out[key] = value

    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            body = token[2:]
            if "=" in body:
                key, text = body.split("=", 1)
                put(key, _value(text), token)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--") and "=" not in argv[i + 1]:
                put(body, _value(argv[i + 1]), token)
                i += 1
            elif not body.replace("-", "_").isidentifier():
                raise UsageError(f"malformed argument '{token}': expected key=value or --key value")
            elif _is_flag(body):
                put(body, True, token)
            else:
                raise UsageError(f"'{token}' needs a value, e.g. {token} VALUE (only true/false keys stand alone)")
        elif "=" in token:
            key, text = token.split("=", 1)
            if not key or not text:
                raise UsageError(f"malformed argument '{token}': expected key=value with both sides present")
            put(key, _value(text), token)
        else:
            raise UsageError(f"unexpected argument '{token}': expected key=value or --key value")
        i += 1
    return out


MODE_KEYS = {
    "export": {"strategy"},
    "benchmark": {"compare", "runs", "warmup", "threads", "rounds"},
    "upcycle": {"to", "experts", "split", "layout", "out"},
    "convert": {"out", "top_k"},
}  # our keys beyond Ultralytics' (train's come from engine.hyp)


def _known_keys(mode: str) -> set[str]:
    from ultralytics.utils import DEFAULT_CFG_DICT

    from .engine.hyp import EXTRA_HYP

    return set(DEFAULT_CFG_DICT) | (set(EXTRA_HYP) if mode == "train" else set()) | MODE_KEYS.get(mode, set())


def check_keys(mode: str, args: dict) -> None:
    """Unknown keys, missing required keys and wrong types fail here, before any work starts.

    Ultralytics' deprecated spellings (``half=True`` -> ``quantize=16``, ...) are mapped in place first,
    with Ultralytics' own warning.
    """
    from .integration.runtime import map_deprecated_keys

    map_deprecated_keys(args)
    known = _known_keys(mode)
    for key in args:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " ('yolo cfg' lists the valid keys)"
            raise UsageError(f"unknown key '{key}' for {mode}{hint}")
    missing = [k for k in MODES[mode][1] if k not in args and not (mode == "train" and args.get("resume"))]
    if missing:
        raise UsageError(f"{mode} needs {', '.join(f'{k}=...' for k in missing)}, e.g. {MODES[mode][2]}")
    from ultralytics.cfg import check_cfg

    from .engine.hyp import EXTRA_HYP, pop_extra_hyp

    check_cfg({k: v for k, v in args.items() if k not in EXTRA_HYP and k not in MODE_KEYS.get(mode, ())})
    pop_extra_hyp({k: v for k, v in args.items() if k in EXTRA_HYP})
    check_values(mode, args)


def check_values(mode: str, args: dict) -> None:
    """Ranges and forms Ultralytics' type check lets through (``validate.py``)."""
    from . import validate

    if "imgsz" in args:
        validate.check_imgsz(args["imgsz"])
    if "batch" in args and mode != "benchmark":
        validate.check_batch(mode, args["batch"])
    if mode == "export":
        validate.check_export_batch(args.get("batch", 1), bool(args.get("dynamic")), args.get("strategy"))
    if mode in {"predict", "routes"} and "source" in args:
        validate.check_source(args["source"])


# Modes of ours that take only some keys (the others pass everything on to Ultralytics).
MODE_ONLY = {
    "routes": {"model", "source", "imgsz", "project", "name"},
    "benchmark": {"model", "compare", "imgsz", "batch", "runs", "warmup", "threads", "rounds", "project", "name"},
    "upcycle": {"model", "to", "experts", "split", "layout", "out", "seed", "exist_ok"},
    "convert": {"model", "out", "top_k", "exist_ok"},
}


def _check_only(mode: str, args: dict) -> None:
    extra = set(args) - MODE_ONLY.get(mode, set(args))
    if extra:
        raise UsageError(f"{mode} takes {', '.join(sorted(MODE_ONLY[mode]))}; not {', '.join(sorted(extra))}")
    for key in ("project", "name"):  # '640' parses as a number; a folder name is text
        if key in args:
            args[key] = str(args[key])


def run(mode: str, args: dict):
    """Execute ``mode`` with validated ``args``; returns what the Python API returns."""
    from . import YOLOMaster
    from .info import model_info

    _check_only(mode, args)
    if mode == "benchmark":
        return run_benchmark(args)
    if mode == "upcycle":
        return run_upcycle(args)
    if mode == "convert":
        return run_convert(args)
    from .validate import image_size

    model = YOLOMaster(args.pop("model", "yolo-master-n.yaml"))
    if mode == "info":
        print(model_info(model, imgsz=image_size(args.get("imgsz", 640))))
        return None
    if mode == "routes":
        from .routes import routes

        if "imgsz" in args:
            args["imgsz"] = image_size(args["imgsz"])
        png = routes(model, args.pop("source"), **args)
        print(f"routes written to {png} and {png.with_suffix('.csv')}")
        return png
    if mode == "predict":
        args.setdefault("save", True)
        results = model.predict(**args)
        if not results and not args.get("stream"):
            raise ValueError(f"nothing was predicted: no readable image or video in source={args['source']}")
        return results
    if mode == "val" and not args.get("data") and not model.overrides.get("data"):
        raise UsageError("val needs data=... (this model records no dataset), e.g. data=shapes")
    return getattr(model, mode)(**args)


def run_benchmark(args: dict):
    from .benchmark import benchmark

    models = [str(args.pop("model", "yolo-master-n.yaml"))]
    models += [m for m in str(args.pop("compare", "")).split(",") if m]
    for key in ("runs", "warmup", "imgsz", "batch", "threads", "rounds"):
        if key in args and (isinstance(args[key], bool) or not isinstance(args[key], int)):
            raise UsageError(f"'{key}={args[key]}' must be an integer")
    from .validate import check_batch, image_size

    if "imgsz" in args:
        args["imgsz"] = image_size(args["imgsz"])
    if "batch" in args:
        check_batch("benchmark", args["batch"])
    table, out_dir = benchmark(models, **args)
    print(table)
    print(f"written to {out_dir / 'benchmark.md'} and {out_dir / 'benchmark.csv'}")
    return table


def run_upcycle(args: dict):
    from .upcycle import upcycle

    for key in ("to", "out", "layout"):
        if key in args:
            args[key] = str(args[key])
    path, report = upcycle(args.pop("model"), **args)
    print(report)
    return path


def _export_strategies() -> str:
    """``slice (onnx, torchscript, mnn default), gather (engine default), ...`` from the format table."""
    from .export.formats import FORMATS
    from .nn import EXPORT_STRATEGIES

    def label(strategy: str) -> str:
        formats = [f for f, spec in FORMATS.items() if spec.strategy == strategy]
        return f"{strategy} ({', '.join(formats)} default)" if formats else strategy

    return ", ".join(map(label, EXPORT_STRATEGIES))


def _export_formats() -> str:
    """``onnx (sparse: slice), ..., ncnn (dense-routed: masked)``: each format's default ES-MoE graph,
    then the formats ES-MoE models cannot reach."""
    from .export.formats import FORMATS, UNAVAILABLE

    reach = ", ".join(f"{f} ({spec.form}: {spec.strategy})" for f, spec in FORMATS.items())
    return f"{reach}; not available: {', '.join(UNAVAILABLE)} (the error says why)"


def run_convert(args: dict):
    from . import YOLOMaster
    from .validate import check_output

    source = Path(str(args["model"]))
    if source.suffix != ".pt":
        raise UsageError(f"convert takes a .pt checkpoint, got model={source}")
    top_k = args.get("top_k")
    out = Path(str(args.get("out") or source.with_name(f"{source.stem}-{f'top{top_k}' if top_k else 'native'}.pt")))
    check_output(out, source, bool(args.get("exist_ok")), "checkpoint being converted")
    model = YOLOMaster(str(source))
    if top_k is not None:
        from .official.sparse import with_top_k

        model.model = with_top_k(model.model, top_k)
        model.ckpt = {**(model.ckpt or {}), "model": model.model}
    model.save(out)
    print(f"converted {source} -> {out}")
    return out


def help_text(mode: str | None = None) -> str:
    if mode is None:
        lines = [USAGE, "", "YOLO-Master: sparse Mixture-of-Experts detection on Ultralytics.", "", "modes:"]
        lines += [f"  {m:<8} {d}" for m, (d, _, _) in MODES.items()]
        lines += ["", "'yolo-master MODE --help' shows a mode's usage; 'yolo cfg' lists every key."]
        return "\n".join(lines)
    desc, required, example = MODES[mode]
    extra = {
        "train": "\n  moe=0.5        weight of the MoE load-balancing loss (0 turns it off)",
        "export": f"\n  format=...     for ES-MoE models: {_export_formats()}"
        f"\n  strategy=...   ES-MoE graph: {_export_strategies()}",
        "benchmark": "\n  compare=a.yaml,b.yaml  models to measure beside model=\n  runs=100 warmup=10     timed and "
        "warm-up runs per runtime\n  rounds=1               interleaved rounds; each cell keeps its fastest",
        "convert": "\n  out=x.pt       output (default: <model>-native.pt, or <model>-top<K>.pt)"
        "\n  top_k=2        run K of each ES-MoE layer's experts (same weights; fine-tune it next)"
        "\n  exist_ok=True  replace an existing out=",
        "upcycle": "\n  to=n.yaml      insert the ES-MoE blocks of this YAML / zoo name (identity at start)"
        "\n  experts=4      copies of each FFN (N)\n  split=2        partitions per copy (k) = experts chosen per image"
        "\n  layout=graft   graft: the checkpoint's layers + ES-MoE (same predictions); target: the YAML as is"
        "\n  out=x-moe.pt   output (default: <model>-moe.pt beside the input)",
    }.get(mode, "")
    return (
        f"usage: yolo-master {mode} [key=value ...] [--key value ...]\n\n{desc}\n\n"
        f"required: {', '.join(required) or 'nothing'}\n"
        f"common keys:\n  model=n.yaml   zoo name (n, s, m, l, x), model YAML or .pt checkpoint{extra}\n\n"
        f"example:\n  {example}"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(help_text())
        return 0
    if argv[0] in {"-V", "--version", "version"}:
        from . import __version__

        print(__version__)
        return 0
    mode = argv[0]
    try:
        if mode not in MODES:
            close = difflib.get_close_matches(mode, MODES, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UsageError(f"unknown mode '{mode}': {hint}choose one of {', '.join(MODES)}")
        if any(t in {"-h", "--help"} for t in argv[1:]):
            print(help_text(mode))
            return 0
        args = parse_args(argv[1:])
        check_keys(mode, args)
        run(mode, args)
        return 0
    except KeyboardInterrupt:
        print(
            "yolo-master: interrupted (a training run keeps the last.pt of its last finished epoch, if one finished; "
            "continue with resume=True model=.../weights/last.pt)",
            file=sys.stderr,
        )
        return 130
    except Exception as e:  # one readable line instead of a traceback; YOLO_MASTER_DEBUG=1 shows it
        if os.environ.get("YOLO_MASTER_DEBUG"):
            raise
        usage = isinstance(e, (UsageError, FileNotFoundError, ValueError, TypeError, SyntaxError))
        usage |= isinstance(e, RuntimeError) and str(e).startswith("Dataset '")  # Ultralytics: the data pointed at
        status = 2 if usage else 1
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"yolo-master {mode}: error: {message}", file=sys.stderr)
        return status


def entrypoint() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
