"""Detector registry: validated ONNX detectors stored by sha256, and detection runs that make suggestion sets."""
