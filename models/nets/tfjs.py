"""Reading TF.js weight manifests and matching TensorFlow's layer semantics in torch.

face-api.js publishes its networks as a TF.js "weights manifest" (JSON) plus binary shards. Each entry
names a tensor, its shape in TensorFlow's layout (NHWC activations, HWIO filters) and, usually, a
per-tensor uint8 quantisation (``value = q * scale + min``). No maintained Python package reads this
format without pulling in TensorFlow, so it is decoded here with numpy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {"float32": np.float32, "int32": np.int32, "uint8": np.uint8, "uint16": np.uint16}


class WeightFormatError(ValueError):
    """The manifest or its shards do not hold what the manifest says."""


class WeightMap(dict[str, Any]):
    """Tensors by manifest name; remembers which ones a port read, so leftovers can be reported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.add(name)
        tensor: np.ndarray = super().__getitem__(name)
        return tensor

    def check_all_read(self, model: str) -> None:
        """A tensor that no layer consumed means the port misread the architecture."""
        unread = sorted(set(self) - self.read)
        if unread:
            raise WeightFormatError(f"{model}: tensors not consumed by the port: {unread[:5]}")


def read_weight_map(manifest_path: Path) -> WeightMap:
    """Decode every tensor of a TF.js weights manifest into float32 numpy arrays (TF layout)."""
    manifest = json.loads(Path(manifest_path).read_text())
    tensors = WeightMap()
    for group in manifest:
        blob = b"".join((Path(manifest_path).parent / name).read_bytes() for name in group["paths"])
        offset = 0
        for entry in group["weights"]:
            shape = tuple(entry["shape"])
            count = math.prod(shape)
            quant = entry.get("quantization")
            stored = np.dtype(_DTYPES[quant["dtype"] if quant else entry["dtype"]])
            size = count * stored.itemsize
            if offset + size > len(blob):
                raise WeightFormatError(f"{manifest_path}: shard ends inside tensor {entry['name']}")
            raw = np.frombuffer(blob, dtype=stored, count=count, offset=offset)
            offset += size
            if quant:
                values = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            else:
                values = raw.astype(np.float32)
            tensors[entry["name"]] = values.reshape(shape)
        if offset != len(blob):
            raise WeightFormatError(f"{manifest_path}: {len(blob) - offset} bytes left after the last tensor")
    return tensors


def conv_filter(hwio: np.ndarray) -> torch.Tensor:
    """TF conv filter (kh, kw, in, out) -> torch (out, in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(hwio.transpose(3, 2, 0, 1)))


def depthwise_filter(hwc1: np.ndarray) -> torch.Tensor:
    """TF depthwise filter (kh, kw, channels, 1) -> torch grouped-conv weight (channels, 1, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(hwc1.transpose(2, 3, 0, 1)))


def dense_weight(in_out: np.ndarray) -> torch.Tensor:
    """TF matmul weight (in, out) -> torch Linear weight (out, in)."""
    return torch.from_numpy(np.ascontiguousarray(in_out.T))


def vector(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values.reshape(-1)))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding for one axis: the extra pixel, if any, goes after, not before."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TfSameConv2d(nn.Conv2d):
    """A Conv2d that pads like TensorFlow's SAME, which is asymmetric for strided layers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.kernel_size[0], self.stride[0]
        top, bottom = same_padding(int(x.shape[-2]), kernel, stride)
        left, right = same_padding(int(x.shape[-1]), kernel, stride)
        return super().forward(F.pad(x, (left, right, top, bottom)))


def tf_same_max_pool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Max pooling with TensorFlow's SAME padding (padded cells never win)."""
    top, bottom = same_padding(int(x.shape[-2]), kernel, stride)
    left, right = same_padding(int(x.shape[-1]), kernel, stride)
    padded = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(padded, kernel, stride)


class SeparableConv(nn.Module):
    """TF ``separableConv2d`` + bias: depthwise (no bias) then pointwise, both SAME-padded."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.depthwise = TfSameConv2d(in_channels, in_channels, 3, stride=stride, groups=in_channels)
        self.depthwise.bias = None
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pointwise(self.depthwise(x))
        return out

    def load_tf(self, weights: dict[str, np.ndarray], prefix: str) -> None:
        self.depthwise.weight.data = depthwise_filter(weights[f"{prefix}/depthwise_filter"])
        self.pointwise.weight.data = conv_filter(weights[f"{prefix}/pointwise_filter"])
        assert self.pointwise.bias is not None  # nn.Conv2d's default: with a bias
        self.pointwise.bias.data = vector(weights[f"{prefix}/bias"])


def load_conv(conv: nn.Conv2d, weights: dict[str, np.ndarray], prefix: str, bias_key: str = "bias") -> None:
    conv.weight.data = conv_filter(weights[f"{prefix}/filters"])
    assert conv.bias is not None  # the ported layers all carry a bias
    conv.bias.data = vector(weights[f"{prefix}/{bias_key}"])
