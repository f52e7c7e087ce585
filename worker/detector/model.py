"""A compact CenterNet-style detector whose exported graph already decodes its heat-maps.

Shapes (N images, C classes, input H×W, output stride S):
- the network works on a copy of the input average-pooled by 2 (at stride 4 of that copy, so
  S = 8 input pixels) and predicts per-class centre heat-maps (N, C, H/S, W/S) as logits, box sizes
  (N, 2, H/S, W/S) in input pixels divided by ``SIZE_SCALE`` and sub-cell centre offsets (N, 2, H/S, W/S)
  in cells;
- :class:`ExportableDetector` wraps it so that the ONNX graph returns the detector contract of
  ``app.detectors.contract``: ``boxes`` (N, K, 4) x1, y1, x2, y2 in input pixels, ``scores`` (N, K) and
  ``labels`` (N, K) int64.

Decoding picks peaks of an objectness map, 1 − Π_c (1 − p_c), the probability that a cell of any class
sits there, so that a cell whose class is uncertain (a grade near a threshold) gives one box, labelled
with its most likely class, instead of one weak box per class.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional

INPUT_DOWNSAMPLE = 2  # the network sees a half-resolution copy: cells stay ≥ 13 px, compute drops fourfold
STRIDE = 4 * INPUT_DOWNSAMPLE  # heat-map cell size in input pixels
SIZE_SCALE = 16.0
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) ≈ 0.1, the CenterNet initialisation


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CenterNet(nn.Module):
    """Average-pool by 2, a small encoder (strides 2–16), a top-down path back to stride 4, 1×1 heads."""

    def __init__(self, num_classes: int, width: int = 24) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            conv_block(3, width // 2, stride=2), conv_block(width // 2, width, stride=2)
        )
        self.stage4 = conv_block(width, width)
        self.stage8 = nn.Sequential(conv_block(width, 2 * width, stride=2), conv_block(2 * width, 2 * width))
        self.stage16 = nn.Sequential(
            conv_block(2 * width, 3 * width, stride=2),
            conv_block(3 * width, 3 * width),
            conv_block(3 * width, 3 * width),
        )
        self.lateral16 = nn.Conv2d(3 * width, 2 * width, 1)
        self.merge8 = conv_block(2 * width, width)
        self.merge4 = conv_block(width, width)
        self.heatmap = nn.Conv2d(width, num_classes, 1)
        self.size = nn.Conv2d(width, 2, 1)
        self.offset = nn.Conv2d(width, 2, 1)
        nn.init.constant_(cast(torch.Tensor, self.heatmap.bias), HEATMAP_PRIOR_BIAS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return heat-map logits, box sizes and offsets, all at stride 4."""
        features4 = self.stage4(self.stem(functional.avg_pool2d(images, INPUT_DOWNSAMPLE)))
        features8 = self.stage8(features4)
        features16 = self.lateral16(self.stage16(features8))
        up8 = self.merge8(features8 + functional.interpolate(features16, scale_factor=2.0, mode="nearest"))
        up4 = self.merge4(features4 + functional.interpolate(up8, scale_factor=2.0, mode="nearest"))
        return self.heatmap(up4), self.size(up4), self.offset(up4)


def decode(
    heatmap_logits: torch.Tensor, sizes: torch.Tensor, offsets: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn raw head outputs (N, C, h, w), (N, 2, h, w), (N, 2, h, w) into the top-K boxes per image.

    A peak is a cell whose objectness equals the 3×3 maximum around it (the CenterNet "NMS by max-pool").
    Returns boxes (N, K, 4) float32 in input pixels, scores (N, K) float32, labels (N, K) int64.
    """
    probabilities = torch.sigmoid(heatmap_logits)
    objectness = 1.0 - torch.prod(1.0 - probabilities, dim=1)
    labels_map = torch.argmax(probabilities, dim=1)
    local_max = functional.max_pool2d(objectness.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    peaks = objectness * (objectness == local_max).to(objectness.dtype)
    batch, height, width = peaks.shape
    scores, indices = torch.topk(peaks.reshape(batch, height * width), top_k, dim=1)
    rows = torch.div(indices, width, rounding_mode="floor")
    cols = indices - rows * width
    labels = torch.gather(labels_map.reshape(batch, -1), 1, indices)
    size_wh = torch.gather(sizes.reshape(batch, 2, -1), 2, indices.unsqueeze(1).expand(-1, 2, -1))
    offset_xy = torch.gather(offsets.reshape(batch, 2, -1), 2, indices.unsqueeze(1).expand(-1, 2, -1))
    centre_x = (cols.to(scores.dtype) + offset_xy[:, 0]) * STRIDE
    centre_y = (rows.to(scores.dtype) + offset_xy[:, 1]) * STRIDE
    half_w = torch.relu(size_wh[:, 0]) * (SIZE_SCALE / 2.0)
    half_h = torch.relu(size_wh[:, 1]) * (SIZE_SCALE / 2.0)
    boxes = torch.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], dim=2)
    return boxes, scores, labels.to(torch.int64)


class ExportableDetector(nn.Module):
    """The trained network followed by :func:`decode`: what goes into the ONNX file."""

    def __init__(self, network: CenterNet, top_k: int) -> None:
        super().__init__()
        self.network = network
        self.top_k = top_k

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (N, 3, H, W) normalised as the sidecar says → boxes, scores, labels."""
        heatmap_logits, sizes, offsets = self.network(images)
        return decode(heatmap_logits, sizes, offsets, self.top_k)
