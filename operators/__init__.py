"""Pure PyTorch operators: models and functions with no I/O (no files, Ray or YAML)."""
