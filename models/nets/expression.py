"""face-api.js expression network: four densely connected blocks and a 7-way softmax.

112x112 RGB (0..255, NCHW) in; probabilities over ``EXPRESSION_LABELS`` out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tfjs import SeparableConv, TfSameConv2d, WeightMap, dense_weight, load_conv, vector

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
# The order of the network's outputs, as trained.
EXPRESSION_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


class _DenseBlock(nn.Module):
    """Four convolutions, each fed the ReLU of the sum of all earlier outputs of the block."""

    def __init__(self, in_channels: int, out_channels: int, first: bool):
        super().__init__()
        self.first = first
        self.conv0 = (
            TfSameConv2d(in_channels, out_channels, 3, stride=2)
            if first
            else SeparableConv(in_channels, out_channels, stride=2)
        )
        self.rest = nn.ModuleList(SeparableConv(out_channels, out_channels) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = F.relu(self.conv0(x))
        for conv in self.rest:
            total = total + conv(F.relu(total))
        return F.relu(total)

    def load_tf(self, weights: WeightMap, prefix: str) -> None:
        if isinstance(self.conv0, TfSameConv2d):  # the first block's
            load_conv(self.conv0, weights, f"{prefix}/conv0")
        else:
            self.conv0.load_tf(weights, f"{prefix}/conv0")
        for index, conv in enumerate(self.rest, start=1):
            assert isinstance(conv, SeparableConv)
            conv.load_tf(weights, f"{prefix}/conv{index}")


class ExpressionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.blocks = nn.ModuleList(
            [
                _DenseBlock(3, 32, first=True),
                _DenseBlock(32, 64, first=False),
                _DenseBlock(64, 128, first=False),
                _DenseBlock(128, 256, first=False),
            ]
        )
        self.fc = nn.Linear(256, len(EXPRESSION_LABELS))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        out = (rgb - self.mean) / 255.0
        for block in self.blocks:
            out = block(out)
        pooled = F.avg_pool2d(out, 7, 2).flatten(1)
        return torch.softmax(self.fc(pooled), dim=1)

    @classmethod
    def from_tfjs(cls, weights: WeightMap) -> "ExpressionNet":
        net = cls()
        for index, block in enumerate(net.blocks):
            assert isinstance(block, _DenseBlock)
            block.load_tf(weights, f"dense{index}")
        net.fc.weight.data = dense_weight(weights["fc/weights"])
        net.fc.bias.data = vector(weights["fc/bias"])
        weights.check_all_read("face_expression_model")
        return net.eval()
