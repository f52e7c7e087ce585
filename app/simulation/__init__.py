"""Simulated experts: a seeded model of expert behaviour per task kind, a study run through the HTTP API,
and study planning by repeated simulation."""
