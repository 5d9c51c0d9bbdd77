"""face-api.js age and gender network: a small Xception trunk with two linear heads.

112x112 RGB (0..255, NCHW) in; age in years (a regression) and P(male), P(female) out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tfjs import SeparableConv, TfSameConv2d, WeightMap, dense_weight, load_conv, tf_same_max_pool, vector

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)
NUM_MAIN_BLOCKS = 2


class _ReductionBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, activate_input: bool):
        super().__init__()
        self.activate_input = activate_input
        self.separable_conv0 = SeparableConv(in_channels, out_channels)
        self.separable_conv1 = SeparableConv(out_channels, out_channels)
        self.expansion_conv = TfSameConv2d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(x) if self.activate_input else x
        out = self.separable_conv1(F.relu(self.separable_conv0(out)))
        pooled: torch.Tensor = tf_same_max_pool(out, 3, 2) + self.expansion_conv(x)
        return pooled

    def load_tf(self, weights: WeightMap, prefix: str) -> None:
        self.separable_conv0.load_tf(weights, f"{prefix}/separable_conv0")
        self.separable_conv1.load_tf(weights, f"{prefix}/separable_conv1")
        load_conv(self.expansion_conv, weights, f"{prefix}/expansion_conv")


class _MainBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.convs = nn.ModuleList(SeparableConv(channels, channels) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for conv in self.convs:
            out = conv(F.relu(out))
        return out + x

    def load_tf(self, weights: WeightMap, prefix: str) -> None:
        for index, conv in enumerate(self.convs):
            assert isinstance(conv, SeparableConv)
            conv.load_tf(weights, f"{prefix}/separable_conv{index}")


class AgeGenderNet(nn.Module):
    """Returns (age (N,), gender probabilities (N, 2) as [male, female])."""

    def __init__(self) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.conv_in = TfSameConv2d(3, 32, 3, stride=2)
        self.reduction0 = _ReductionBlock(32, 64, activate_input=False)
        self.reduction1 = _ReductionBlock(64, 128, activate_input=True)
        self.middle = nn.ModuleList(_MainBlock(128) for _ in range(NUM_MAIN_BLOCKS))
        self.exit_reduction = _ReductionBlock(128, 256, activate_input=True)
        self.exit_conv = SeparableConv(256, 512)
        self.age = nn.Linear(512, 1)
        self.gender = nn.Linear(512, 2)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = (rgb - self.mean) / 255.0
        out = F.relu(self.conv_in(out))
        out = self.reduction1(self.reduction0(out))
        for block in self.middle:
            out = block(out)
        out = F.relu(self.exit_conv(self.exit_reduction(out)))
        pooled = F.avg_pool2d(out, 7, 2).flatten(1)
        return self.age(pooled).squeeze(1), torch.softmax(self.gender(pooled), dim=1)

    @classmethod
    def from_tfjs(cls, weights: WeightMap) -> "AgeGenderNet":
        net = cls()
        load_conv(net.conv_in, weights, "entry_flow/conv_in")
        net.reduction0.load_tf(weights, "entry_flow/reduction_block_0")
        net.reduction1.load_tf(weights, "entry_flow/reduction_block_1")
        for index, block in enumerate(net.middle):
            assert isinstance(block, _MainBlock)
            block.load_tf(weights, f"middle_flow/main_block_{index}")
        net.exit_reduction.load_tf(weights, "exit_flow/reduction_block")
        net.exit_conv.load_tf(weights, "exit_flow/separable_conv")
        for head in ("age", "gender"):
            layer = getattr(net, head)
            layer.weight.data = dense_weight(weights[f"fc/{head}/weights"])
            layer.bias.data = vector(weights[f"fc/{head}/bias"])
        weights.check_all_read("age_gender_model")
        return net.eval()
