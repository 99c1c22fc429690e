"""The translation job (``python -m jobs.translate``): sketches or label maps to faces."""
