"""Training: tasks (what is learned), protocols (who trains what), the loop, checkpoints."""
