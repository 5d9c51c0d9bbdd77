"""The dlib ResNet face descriptor (128-d), as ported to TF.js by face-api.js.

A 29-layer residual network: 150x150 RGB aligned chip in, 128 numbers out. dlib reports 99.38 % on LFW
with a Euclidean threshold of 0.6 on the raw (not normalised) descriptor.

The module takes float RGB pixels in 0..255, NCHW, and does its own normalisation, so that the exported
ONNX graph needs no preprocessing beyond the aligned crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tfjs import WeightMap, load_conv, vector

INPUT_SIZE = 150
MEAN_RGB = (122.782, 117.001, 104.298)


class _ConvScale(nn.Module):
    """Conv + bias followed by a per-channel affine 'scale' layer (dlib's frozen batch norm)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        # Stride-1 layers use SAME padding (symmetric for odd kernels); strided ones use VALID.
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding)
        self.scale_weight = nn.Parameter(torch.ones(out_channels))
        self.scale_bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        scaled: torch.Tensor = out * self.scale_weight.view(1, -1, 1, 1) + self.scale_bias.view(1, -1, 1, 1)
        return scaled

    def load_tf(self, weights: WeightMap, prefix: str) -> None:
        load_conv(self.conv, weights, f"{prefix}/conv")
        self.scale_weight.data = vector(weights[f"{prefix}/scale/weights"])
        self.scale_bias.data = vector(weights[f"{prefix}/scale/biases"])


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _ConvScale(channels, channels, 3, 1)
        self.conv2 = _ConvScale(channels, channels, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        return F.relu(out + x)

    def load_tf(self, weights: WeightMap, prefix: str) -> None:
        self.conv1.load_tf(weights, f"{prefix}/conv1")
        self.conv2.load_tf(weights, f"{prefix}/conv2")


class _ResidualDown(nn.Module):
    """Strided residual block; the shortcut is a 2x2 average pool, zero-padded to the new shape."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _ConvScale(in_channels, out_channels, 3, 2)
        self.conv2 = _ConvScale(out_channels, out_channels, 3, 1)
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2)
        # On odd sizes the VALID strided conv yields one row/column fewer than the pool; the port
        # pads the conv branch with zeros at the bottom and right, as the original does.
        missing_rows = int(shortcut.shape[-2]) - int(out.shape[-2])
        missing_cols = int(shortcut.shape[-1]) - int(out.shape[-1])
        if missing_rows or missing_cols:
            out = F.pad(out, (0, missing_cols, 0, missing_rows))
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(out + shortcut)

    def load_tf(self, weights: WeightMap, prefix: str) -> None:
        self.conv1.load_tf(weights, f"{prefix}/conv1")
        self.conv2.load_tf(weights, f"{prefix}/conv2")


class DlibResNet(nn.Module):
    """150x150 RGB (0..255, NCHW) -> raw 128-d descriptor (not normalised)."""

    # (name, block, in_channels, out_channels) in forward order.
    _LAYOUT = (
        ("conv32_1", "res", 32, 32),
        ("conv32_2", "res", 32, 32),
        ("conv32_3", "res", 32, 32),
        ("conv64_down", "down", 32, 64),
        ("conv64_1", "res", 64, 64),
        ("conv64_2", "res", 64, 64),
        ("conv64_3", "res", 64, 64),
        ("conv128_down", "down", 64, 128),
        ("conv128_1", "res", 128, 128),
        ("conv128_2", "res", 128, 128),
        ("conv256_down", "down", 128, 256),
        ("conv256_1", "res", 256, 256),
        ("conv256_2", "res", 256, 256),
        ("conv256_down_out", "down", 256, 256),
    )

    def __init__(self) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.stem = _ConvScale(3, 32, 7, 2)
        self.blocks = nn.ModuleDict(
            {
                name: (_Residual(c_out) if kind == "res" else _ResidualDown(c_in, c_out))
                for name, kind, c_in, c_out in self._LAYOUT
            }
        )
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        out = (rgb - self.mean) / 255.0
        out = F.max_pool2d(F.relu(self.stem(out)), 3, 2)
        for block in self.blocks.values():
            out = block(out)
        embedding: torch.Tensor = self.fc(out.mean(dim=(2, 3)))
        return embedding

    @classmethod
    def from_tfjs(cls, weights: WeightMap) -> "DlibResNet":
        net = cls()
        net.stem.load_tf(weights, "conv32_down")
        for name, block in net.blocks.items():
            assert isinstance(block, (_Residual, _ResidualDown))
            block.load_tf(weights, name)
        net.fc.weight.data = torch.from_numpy(weights["fc"].T.copy())
        weights.check_all_read("face_recognition_model")
        return net.eval()
