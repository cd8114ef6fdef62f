"""Optimizer plugins: each is a factory `(params, cfg: OptimConfig) -> torch.optim.Optimizer`."""
