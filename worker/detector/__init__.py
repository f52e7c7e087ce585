"""Concord's own CenterNet-style detectors, trained on phantom images and shipped as ONNX + sidecar."""
