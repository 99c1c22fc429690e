"""The editing job (``python -m jobs.edit``): directions, style mixing, interpolation and face swap on W+ codes."""
