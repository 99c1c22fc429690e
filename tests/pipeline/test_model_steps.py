"""The actors' model calls: batching, transfer and order never change the codes."""

import numpy as np
import pytest
import torch

from engines import load_inverter
from factories import make_e2style, write_official
from operators.images import images_to_tensor
from pipeline.core.model_steps import invert_images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(write_official(make_e2style(stages=2, seed=71), tmp_path_factory.mktemp("m") / "e2style.pt"))


def uint8_images(count: int, seed: int) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    images.setflags(write=False)  # as they arrive from Ray's object store
    return images


def test_invert_images_gives_each_batchs_codes_in_order(checkpoint):
    inverter = load_inverter(checkpoint)
    images = uint8_images(7, seed=1)
    codes = invert_images(inverter, images, batch_size=3)  # 3 + 3 + 1
    assert codes.dtype == np.float32 and codes.shape == (7, inverter.config.num_ws, inverter.config.style_dim)
    expected = [inverter.invert(images_to_tensor(images[i : i + 3])).numpy() for i in (0, 3, 6)]
    np.testing.assert_array_equal(codes, np.concatenate(expected))
    # The batch size changes only the round-off of the convolutions.
    np.testing.assert_allclose(codes, inverter.invert(images_to_tensor(images)).numpy(), rtol=0, atol=1e-5)
    assert invert_images(inverter, images[:0], batch_size=3).shape == (0, inverter.config.num_ws, inverter.config.style_dim)


@pytest.mark.gpu
def test_invert_images_on_a_gpu_matches_the_cpu(checkpoint):
    images = uint8_images(9, seed=2)
    gpu = invert_images(load_inverter(checkpoint, device="cuda"), images, batch_size=4)
    cpu = invert_images(load_inverter(checkpoint), images, batch_size=4)
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-4)
    assert torch.cuda.is_available()
