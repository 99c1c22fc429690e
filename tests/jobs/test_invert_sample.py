import numpy as np
import torch
from PIL import Image

from engines import load_inverter
from jobs import invert_sample
from operators.images import images_to_tensor


def test_sample_job_end_to_end(tmp_path, capsys):
    assert invert_sample.main(["--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"W+ codes [6x10x32]: {tmp_path / 'latents.npy'}" in printed

    names = (tmp_path / "image_list.txt").read_text().splitlines()
    assert names == [f"samples/faces/face_{i:02d}.png" for i in range(6)]
    codes = np.load(tmp_path / "latents.npy")
    assert codes.shape == (6, 10, 32) and codes.dtype == np.float32
    np.testing.assert_array_equal(codes, np.load(tmp_path / "latents_stage2.npy"))

    # The codes are those of the public API on the same file and images.
    inverter = load_inverter(str(tmp_path / "e2style-tiny-64-stage2.pt"))
    x = images_to_tensor(np.stack([invert_sample.load_rgb(invert_sample.ROOT / n, 32) for n in names]))
    torch.testing.assert_close(torch.from_numpy(codes), inverter.invert(x), rtol=0, atol=0)
    stage1 = inverter.invert(x, all_stages=True)[0]
    np.testing.assert_array_equal(np.load(tmp_path / "latents_stage1.npy"), stage1.numpy())
    recon = np.asarray(Image.open(tmp_path / "reconstructions" / "face_03.png"))
    assert recon.shape == (32, 32, 3) and recon.std() > 0

    # A second run reuses the written model and gives the same codes.
    assert invert_sample.main(["--output", str(tmp_path)]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "latents.npy"), codes)
