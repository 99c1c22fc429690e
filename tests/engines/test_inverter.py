import pytest
import torch

from engines import load_inverter
from engines.runners import ieee_float32, resolve_device
from factories import images, make_e2style, write_official


@pytest.fixture(scope="module")
def inverter(tmp_path_factory):
    path = write_official(make_e2style(stages=2, seed=31), tmp_path_factory.mktemp("inv") / "m.pt")
    return load_inverter(str(path), stages=2)


def test_golden_codes_and_reconstruction(inverter):
    x = images(2, 3, 32, seed=32)
    codes = inverter.invert(x)
    recon = inverter.synthesize(codes)
    assert codes.shape == (2, 10, 32) and codes.dtype == torch.float32
    assert recon.shape == (2, 3, 32, 32)
    golden_codes = torch.tensor([0.218953, -1.629772, 2.423679, -0.739517])
    golden_recon = torch.tensor([-0.259442, -0.255314, -0.223762, -0.272692])
    torch.testing.assert_close(codes[1, 3, :4], golden_codes, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(recon[0, 2, 16, 10:14], golden_recon, rtol=1e-4, atol=1e-4)


def test_batch_composition_does_not_change_results(inverter):
    x = images(4, 3, 32, seed=33)
    together = inverter.invert(x)
    alone = torch.cat([inverter.invert(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_float64_inputs_are_run_in_float32(inverter):
    x = images(1, 3, 32, seed=34)
    torch.testing.assert_close(inverter.invert(x.double()), inverter.invert(x), rtol=0, atol=0)


def test_inputs_are_checked(inverter):
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 32, 32\], got \[1, 3, 256, 256\]"):
        inverter.invert(torch.zeros(1, 3, 256, 256))
    with pytest.raises(TypeError, match="floating-point"):
        inverter.invert(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"codes must be W\+ \[B, 10, 32\], got \[1, 18, 512\]"):
        inverter.synthesize(torch.zeros(1, 18, 512))


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    with ieee_float32(torch.device("cpu")):
        pass


@pytest.mark.gpu
def test_gpu_matches_cpu(tmp_path):
    path = write_official(make_e2style(stages=2, seed=35), tmp_path / "m.pt")
    x = images(3, 3, 32, seed=36)
    cpu, gpu = load_inverter(str(path), device="cpu"), load_inverter(str(path), device="cuda")
    torch.testing.assert_close(gpu.invert(x).cpu(), cpu.invert(x), rtol=0, atol=1e-4)
    torch.testing.assert_close(gpu.synthesize(cpu.invert(x)).cpu(), cpu.synthesize(cpu.invert(x)), rtol=0, atol=1e-4)
