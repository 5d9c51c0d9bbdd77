"""A second, independent forward pass of the dlib descriptor, in numpy, in TensorFlow's own layout.

It reads the TF.js weight map as stored (NHWC activations, HWIO filters) and follows the face-api.js
graph op by op, so it shares no code with the torch port: no transposed weights, no torch padding.
Slow, and only for tests.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pad_same(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    pads = []
    for size in x.shape[1:3]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def conv2d(x: np.ndarray, filters: np.ndarray, stride: int, padding: str) -> np.ndarray:
    kernel = filters.shape[0]
    if padding == "same":
        x = _pad_same(x, kernel, stride)
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    return np.tensordot(windows, filters.transpose(2, 0, 1, 3), axes=([3, 4, 5], [0, 1, 2]))


def pool(x: np.ndarray, kernel: int, stride: int, reduce) -> np.ndarray:
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    return reduce(windows, axis=(4, 5))


def _conv_layer(x, w, prefix, stride, relu, padding):
    out = conv2d(x, w[f"{prefix}/conv/filters"], stride, padding) + w[f"{prefix}/conv/bias"]
    out = out * w[f"{prefix}/scale/weights"] + w[f"{prefix}/scale/biases"]
    return np.maximum(out, 0) if relu else out


def _residual(x, w, prefix):
    out = _conv_layer(x, w, f"{prefix}/conv1", 1, True, "same")
    out = _conv_layer(out, w, f"{prefix}/conv2", 1, False, "same")
    return np.maximum(out + x, 0)


def _residual_down(x, w, prefix):
    out = _conv_layer(x, w, f"{prefix}/conv1", 2, True, "valid")
    out = _conv_layer(out, w, f"{prefix}/conv2", 1, False, "same")
    pooled = pool(x, 2, 2, np.mean)
    if pooled.shape[1:3] != out.shape[1:3]:
        out = np.concatenate([out, np.zeros_like(out[:, :1])], axis=1)
        out = np.concatenate([out, np.zeros_like(out[:, :, :1])], axis=2)
    if pooled.shape[3] != out.shape[3]:
        pooled = np.concatenate([pooled, np.zeros_like(pooled)], axis=3)
    return np.maximum(pooled + out, 0)


def dlib_descriptor(rgb_nhwc: np.ndarray, w) -> np.ndarray:
    """(N, 150, 150, 3) RGB 0..255 -> (N, 128) raw descriptors."""
    x = (rgb_nhwc.astype(np.float64) - np.array([122.782, 117.001, 104.298])) / 255.0
    x = _conv_layer(x, w, "conv32_down", 2, True, "valid")
    x = pool(x, 3, 2, np.max)
    for name in ("conv32_1", "conv32_2", "conv32_3"):
        x = _residual(x, w, name)
    for down, rest in (
        ("conv64_down", ("conv64_1", "conv64_2", "conv64_3")),
        ("conv128_down", ("conv128_1", "conv128_2")),
        ("conv256_down", ("conv256_1", "conv256_2")),
    ):
        x = _residual_down(x, w, down)
        for name in rest:
            x = _residual(x, w, name)
    x = _residual_down(x, w, "conv256_down_out")
    return x.mean(axis=(1, 2)) @ w["fc"]
