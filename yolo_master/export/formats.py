"""Every export format an ES-MoE model reaches, the routing form each one gets, and why.

Two forms, one function. *Sparse* strategies (``slice``, ``gather``, ``branch``, ``slots``) run only the chosen
experts. *Dense-routed* ones (``dense``, ``masked``) keep the gate and the top-K choice in the graph,
compute every expert and weight the unchosen ones by zero. A format gets the sparse form where its
converter keeps it exact and its runtime runs it faster, a dense-routed one otherwise (README
"Export formats" has the measurements). Exporting logs the form and this reason.

Formats Ultralytics offers that cannot work here are in :data:`UNAVAILABLE`, each with the reason.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import NamedTuple

SPARSE, DENSE_ROUTED = "sparse", "dense-routed"


def form_of(strategy: str) -> str:
    """``dense-routed`` for the strategies that compute every expert, else ``sparse``."""
    return DENSE_ROUTED if strategy in {"dense", "masked"} else SPARSE


class ExportFormat(NamedTuple):
    """How an ES-MoE model exports to one format.

    Attributes:
        strategy: the ES-MoE graph strategy traced by default (``nn/dispatch.py``).
        why: one line: why that form for this format.
        needs: modules the converter imports; missing ones stop the export before it starts.
        install: the command that installs them.
        runtime: ``"runs here"`` when its runtime runs on Linux x86 (parity-tested against PyTorch),
            else what is checked instead.
        comparisons: ``masked`` builds its top-K mask from comparisons (the converter maps no ceil).
        own_environment: its packages pin others below what the rest needs, so they go in a virtual
            environment of their own (``scripts/setup_tensorflow.sh``, where ``scripts/test.sh`` tests them).
        opset: the ONNX opset its converter needs (``None``: Ultralytics' default).
        quantized: the format is always quantized, so export calibrates on ``data=`` images and parity is
            within quantization error (tested as: closer to the right route's output than to a wrong one's;
            for xilinx, whose 8-bit activations move the output more than a wrong route does, by the experts
            its graph's TopK picks).
        depthwise_tile: its runtime is slow on depthwise kernels above this size, so the experts' larger
            kernels are exported as sums of convolutions by blocks of at most this size (``nn/depthwise.py``).
        dynamic_strategy: the dense-routed strategy traced instead of a sparse default when ``dynamic=True``
            asks for a batch-free graph (the sparse graphs unroll a static batch); ``None``: refused in one line.
    """

    strategy: str
    why: str
    needs: tuple[str, ...] = ()
    install: str = ""
    runtime: str = "runs here"
    comparisons: bool = False
    own_environment: bool = False
    opset: int | None = None
    quantized: bool = False
    depthwise_tile: int | None = None
    dynamic_strategy: str | None = None

    @property
    def form(self) -> str:
        return form_of(self.strategy)


# XNNPACK (LiteRT's and ExecuTorch's CPU delegate) ran a 64 x 160 x 160 depthwise 7x7 at 15x torch's time, 9x9 at
# 18x, 5x5 at 1.2x; the 7x7 and 9x9 experts as blocks of at most 5x5 took LiteRT's yolo-master-n from 4.2x YOLO11n to
# 2.2x and ExecuTorch's from 3.7x to 2.4x (scripts/litert_depthwise.py, scripts/format_latency.py). ORT, MNN, ncnn:
# no gain or slower, so only these formats tile.
XNNPACK_TILE = 5


def _extra(name: str, fallback: str) -> str:
    return f"pip install 'yolo-master[{name}]' (or pip install {fallback})"


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(
        "slice",
        "ONNX Runtime runs the static-convolution sparse graph fastest",
        ("onnx",),
        _extra("export", "onnx onnxruntime onnxslim"),
    ),
    "torchscript": ExportFormat("slice", "the same traced graph as ONNX"),
    "engine": ExportFormat(
        "gather",
        "TensorRT builds it without data-dependent shapes",
        ("tensorrt",),
        "pip install tensorrt",
        runtime="GPU only (scripts/gpu_check.sh)",
    ),
    "openvino": ExportFormat(
        "slots",
        "OpenVINO's CPU plugin runs gathered-weight slots with static shapes fastest, faster than every expert",
        ("openvino",),
        _extra("openvino", "openvino"),
        dynamic_strategy="dense",
    ),
    "mnn": ExportFormat(
        "slice",
        "MNN converts the sparse graph exactly (every strategy converts)",
        ("MNN",),
        _extra("mnn", "MNN"),
    ),
    "ncnn": ExportFormat(
        "masked",
        "ncnn has no TopK, Gather, Scatter, If or comparison layer: the top-K is computed arithmetically",
        ("pnnx", "ncnn"),
        _extra("ncnn", "ncnn pnnx==20260526"),
    ),
    "executorch": ExportFormat(
        "masked",
        "torch.export cannot lower the sparse graph's data-dependent shapes for XNNPACK",
        ("executorch",),
        _extra("executorch", "executorch"),
        depthwise_tile=XNNPACK_TILE,
    ),
    "paddle": ExportFormat(
        "masked",
        "x2paddle maps neither Scatter, nor the sparse graphs' data-dependent slices, nor ceil: top-K by comparisons",
        ("paddle", "x2paddle"),
        _extra("paddle", "'paddlepaddle<3.3' x2paddle six"),
        comparisons=True,
    ),
    "coreml": ExportFormat(
        "slice",
        "Core ML keeps TopK and the sparse graph (a static-shape graph, converted from TorchScript)",
        ("coremltools",),
        _extra("coreml", "coremltools"),
        runtime="structural check (Core ML runs on macOS only)",
    ),
    "qnn": ExportFormat(
        "dense",
        "the whole graph compiles into one QNN HTP context (W8A16) with TopK; the sparse graphs' data-dependent "
        "shapes do not",
        ("onnxruntime_qnn",),
        _extra("qnn", "onnxruntime-qnn"),
        opset=17,  # ORT's quantization shape inference cannot read opset 18's axes inputs (masked's ReduceMax)
        quantized=True,
    ),
    "deepx": ExportFormat(
        "dense",
        "DEEPX's NPU has no TopK, Gather or Scatter (nor Ceil): its graph ends at the first ES-MoE gate and the "
        "host CPU runs the rest, routing included (the export log says what runs where)",
        ("dx_com",),
        _extra("deepx", "dx-com"),
        runtime="structural check (DEEPX's runtime needs its NPU)",
        quantized=True,
    ),
    "coreai": ExportFormat(
        "dense",
        "Core AI's runtime (macOS 26) cannot run here to check a sparse graph's data-dependent shapes: "
        "the static-shape graph, with the gate's top-K and the scatter of its weights in the program",
        ("coreai_torch",),
        _extra("coreai", "coreai-torch"),
        runtime="structural check (Core AI runs on macOS 26 only)",
    ),
}
_TF = ("tensorflow", "tf_keras", "onnx2tf", "onnx_graphsurgeon", "sng4onnx", "ai_edge_litert")
_LITERT = ("litert_torch", "ai_edge_litert")
_TF_WHY = "onnx2tf converts TopK but neither the sparse graph's empty batches nor its conditionals"
_LITERT_WHY = "litert-torch lowers TopK but not the sparse graphs' data-dependent shapes"
_TF_INSTALL = (
    "pip install 'yolo-master[tensorflow]' in a virtual environment of its own (tensorflow 2.19 pins numpy, "
    "protobuf and onnx lower; from a checkout: bash scripts/setup_tensorflow.sh)"
)
FORMATS.update(
    {
        "saved_model": ExportFormat("dense", _TF_WHY, _TF, _TF_INSTALL, own_environment=True),
        "pb": ExportFormat("dense", _TF_WHY, _TF, _TF_INSTALL, own_environment=True),
        # Ultralytics 8.4 exports format=tflite and format=tfjs as LiteRT (a .tflite file)
        **{
            f: ExportFormat(
                "dense", _LITERT_WHY, _LITERT, _TF_INSTALL, own_environment=True, depthwise_tile=XNNPACK_TILE
            )
            for f in ("litert", "tflite", "tfjs")
        },
    }
)

FORMATS["xilinx"] = ExportFormat(
    "dense",
    "AMD Quark quantizes the static-shape graph to VINT8 for the Vitis AI NPU; the gate and its top-K stay in float "
    "(as Ultralytics keeps the head), so int8 rounding does not pick the experts",
    ("quark",),
    "pip install 'yolo-master[xilinx]' in the TensorFlow environment (amd-quark pins onnx <= 1.22; from a checkout: "
    "bash scripts/setup_tensorflow.sh)",
    runtime="quantized graph run in ONNX Runtime (the NPU compile needs AMD's Vitis AI execution provider)",
    own_environment=True,
    opset=17,  # what Ultralytics' xilinx export uses (AMD-validated for YOLO)
    quantized=True,
)

UNAVAILABLE: dict[str, str] = {
    "edgetpu": "it needs Google's Edge TPU compiler (a download, not on the package index) and int8 calibration "
    "images from the internet",
    "imx": "Sony's converter needs an environment of its own (torch < 2.12) and Java 17 from apt",
    "rknn": "rknn-toolkit2 needs torch 2.4 in an environment of its own",
    "axelera": "its compiler comes from Axelera's own package index",
    "hailo": "the Hailo SDK is a registered download, not on the package index",
    "ascend": "it needs Huawei's CANN atc compiler",
}


def check_format(fmt: str) -> ExportFormat:
    """The :class:`ExportFormat` for ``fmt``, after checking that its converter can run here.

    Raises:
        ValueError: a format ES-MoE models cannot export to (usage).
        RuntimeError: its packages are not installed (environment).
    """
    if fmt in UNAVAILABLE:
        raise ValueError(f"format={fmt} is not available for ES-MoE models: {UNAVAILABLE[fmt]}")
    if fmt not in FORMATS:
        raise ValueError(
            f"ES-MoE models export to {', '.join(FORMATS)}; format '{fmt}' is not supported "
            "(its converter cannot keep the routing)"
        )
    spec = FORMATS[fmt]
    missing = [m for m in spec.needs if find_spec(m) is None]
    if missing:
        raise RuntimeError(f"format={fmt} needs {', '.join(missing)}, which is not installed: {spec.install}")
    return spec
