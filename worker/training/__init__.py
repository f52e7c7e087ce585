"""VotesLoss training (PyTorch): imported only by the worker's child process and the CLI, never by the API."""
