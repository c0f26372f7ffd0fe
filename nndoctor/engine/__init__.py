"""How a check run is driven: the session (model, batches, device, state), the runner, threads."""
