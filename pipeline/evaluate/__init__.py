"""The evaluation job (``python -m jobs.evaluate``): a checkpoint's inversion quality per stage on the user's
images (PSNR, SSIM, MS-SSIM, L2, LPIPS, identity similarity, FID), run time and parameters, engine
precisions compared, and a report."""
