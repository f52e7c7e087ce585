"""Structured logs, Prometheus metrics, and the orchestration probes /healthz and /readyz."""
