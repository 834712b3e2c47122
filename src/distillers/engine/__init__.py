"""The one training/evaluation loop, checkpoints and run logging."""
