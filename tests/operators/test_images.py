import numpy as np
import pytest
import torch

from operators.images import images_to_tensor, tensor_to_images


def official_to_tensor(img: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize(0.5, 0.5) as torchvision computes them, in float32."""
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    return t.sub_(torch.tensor([0.5] * 3)[:, None, None]).div_(torch.tensor([0.5] * 3)[:, None, None]).numpy()


def official_tensor2im(t: np.ndarray) -> np.ndarray:
    var = t.transpose(1, 2, 0)
    var = (var + 1) / 2
    var[var < 0] = 0
    var[var > 1] = 1
    return (var * 255).astype("uint8")


def test_preprocessing_matches_official_bit_for_bit():
    img = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3).astype(np.uint8)
    x = images_to_tensor(img)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0].numpy(), official_to_tensor(img))
    assert x.min() == -1.0 and x.max() == 1.0


def test_postprocessing_matches_official_and_truncates():
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 8, 8, generator=gen) * 1.5  # includes values outside [-1, 1]
    ours = tensor_to_images(y)
    for b in range(2):
        np.testing.assert_array_equal(ours[b].numpy(), official_tensor2im(y[b].numpy().copy()))
    # 254.9 truncates to 254, it does not round to 255.
    v = torch.full((1, 3, 1, 1), 254.9 / 255 * 2 - 1)
    assert tensor_to_images(v)[0, 0, 0, 0].item() == 254


def test_round_trip():
    img = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (2, 256, 3)).copy()
    x = images_to_tensor(img)
    np.testing.assert_array_equal(tensor_to_images(x, rounding="nearest")[0].numpy(), img)
    # The official truncation drops exactly 1 on some values and never raises one.
    lost = img.astype(int) - tensor_to_images(x)[0].numpy().astype(int)
    assert set(np.unique(lost)) == {0, 1}
    assert lost[0, :, 0].tolist().count(1) == 63


def test_bad_inputs():
    with pytest.raises(TypeError, match="uint8"):
        images_to_tensor(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="RGB"):
        images_to_tensor(np.zeros((4, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        tensor_to_images(torch.zeros(1, 1, 4, 4))


def test_box_downsample_is_the_official_adaptive_pool_for_divisible_sizes():
    from operators.images import box_downsample

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(box_downsample(x, 16), torch.nn.functional.adaptive_avg_pool2d(x, 16))
    assert box_downsample(x, 64) is x
    with pytest.raises(ValueError, match="48 must divide 64"):
        box_downsample(x, 48)
