"""The restoration job (``python -m jobs.restore``): colorization, denoising, inpainting, super-resolution."""
