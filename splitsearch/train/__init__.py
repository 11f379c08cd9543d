"""Co-training engine: data, losses, optimisation and the training loop."""
