"""One module per job kind; each exposes `run(params, progress) -> dict`, registered in app.jobs.registry."""
