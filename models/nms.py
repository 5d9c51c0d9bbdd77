"""Non-maximum suppression over numpy boxes, grouped (boxes of different groups never suppress each other).

torchvision's ``batched_nms`` is the implementation of record; where torchvision cannot be imported (a
torch/torchvision version mismatch, say), a greedy equivalent in plain torch takes over.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    from torchvision.ops import batched_nms as _batched_nms
except Exception:  # noqa: BLE001 - any import failure (missing, ABI mismatch) means: use the fallback
    _batched_nms = None


def _greedy_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    # Offsetting each group far apart makes one pass over all boxes equal to per-group NMS.
    offsets = groups.to(boxes.dtype) * (boxes.max() + 1)
    shifted = boxes + offsets[:, None]
    areas = (shifted[:, 2] - shifted[:, 0]).clamp(min=0) * (shifted[:, 3] - shifted[:, 1]).clamp(min=0)
    order = scores.argsort(descending=True)
    keep = []
    while order.numel():
        best = order[0]
        keep.append(best)
        rest = order[1:]
        top_left = torch.maximum(shifted[best, :2], shifted[rest, :2])
        bottom_right = torch.minimum(shifted[best, 2:], shifted[rest, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return torch.stack(keep) if keep else torch.empty(0, dtype=torch.long)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, highest score first. ``boxes`` is (N, 4) as x1, y1, x2, y2."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    args = (
        torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(groups, dtype=np.int64)),
        float(iou_threshold),
    )
    keep = _batched_nms(*args) if _batched_nms is not None else _greedy_batched_nms(*args)
    return keep.numpy()
