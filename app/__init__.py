"""Concord: expert–algorithm collaboration studies on microscopy images."""
