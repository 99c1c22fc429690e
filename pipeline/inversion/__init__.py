"""The inversion job (``python -m jobs.invert_dataset``): images to W+ codes, one Parquet file per input shard.

Kept import-free: CPU workers unpickling its write and decode steps (``steps``) must not import torch.
"""
