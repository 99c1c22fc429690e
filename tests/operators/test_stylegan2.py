import dataclasses

import pytest
import torch
import torch.nn.functional as F

from factories import REFERENCE_DIR, randomize_
import official_reference as ref
from operators.stylegan2 import Generator, GeneratorConfig, ModulatedConv2d, bias_leaky_relu

TINY = GeneratorConfig(resolution=64, style_dim=32, mapping_layers=2, channel_multiplier=1, channel_base=512, channel_max=32)


def tiny_generator(seed=0, **overrides) -> Generator:
    torch.manual_seed(seed)
    return randomize_(Generator(dataclasses.replace(TINY, **overrides)), seed).eval()


def codes(batch, num_ws, dim, seed):
    return torch.randn(batch, num_ws, dim, generator=torch.Generator().manual_seed(seed))


def test_official_decoder_keys_shapes_and_order_match_the_released_files():
    rows = [line.rstrip("\n").split("\t") for line in open(REFERENCE_DIR / "e2style_stage2_checkpoint_keys.tsv")]
    expected = [(k[len("decoder.") :], shape) for k, shape, _ in rows if k.startswith("decoder.")]
    with torch.device("meta"):
        gen = Generator(GeneratorConfig())
    ours = [(k, str(tuple(v.shape))) for k, v in gen.state_dict().items()]
    assert ours == expected
    assert sum(v.numel() for v in gen.state_dict().values()) == 33_166_492


def test_channel_table_is_rosinality_config_f():
    cfg = GeneratorConfig()
    assert {r: cfg.channels(r) for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024)} == {
        4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32
    }
    assert (cfg.num_ws, cfg.num_noises) == (18, 17)
    assert [cfg.noise_resolution(i) for i in range(17)] == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]


@pytest.mark.parametrize("resolution", [0, 48, 16, 2048])
def test_resolution_must_be_power_of_two_in_range(resolution):
    with pytest.raises(ValueError, match="resolution"):
        GeneratorConfig(resolution=resolution)


@pytest.mark.parametrize("upsample,demodulate,kernel", [(False, True, 3), (True, True, 3), (False, False, 1)])
@pytest.mark.parametrize("batch", [1, 3])
def test_modulated_conv_forms_agree(upsample, demodulate, kernel, batch):
    torch.manual_seed(1)
    grouped = ModulatedConv2d(8, 6, kernel, 16, demodulate=demodulate, upsample=upsample, form="grouped")
    batched = ModulatedConv2d(8, 6, kernel, 16, demodulate=demodulate, upsample=upsample, form="batched")
    batched.load_state_dict(randomize_(grouped, 3).state_dict())
    x = torch.randn(batch, 8, 9, 9)
    w = torch.randn(batch, 16)
    a, b = grouped(x, w), batched(x, w)
    assert a.shape == (batch, 6, 18 if upsample else 9, 18 if upsample else 9)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # Each sample of a batch is computed as if alone.
    torch.testing.assert_close(batched(x[-1:], w[-1:]), a[-1:], rtol=1e-5, atol=1e-5)


def test_generator_forms_agree_and_match_the_reference():
    grouped = tiny_generator(modulation="grouped")
    batched = Generator(dataclasses.replace(TINY, modulation="batched")).eval()
    batched.load_state_dict(grouped.state_dict())
    ws = codes(3, 10, 32, seed=5)
    with torch.no_grad():
        a, b = grouped(ws), batched(ws)
    expected = ref.generator(grouped.state_dict(), ws)
    assert a.shape == (3, 3, 64, 64)
    torch.testing.assert_close(a, expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(b, expected, rtol=0, atol=2e-5)


def test_generator_golden_values():
    with torch.no_grad():
        image = tiny_generator(seed=7)(codes(1, 10, 32, seed=8))
    golden = torch.tensor([0.361153, 0.407124, 0.463116, 0.478029, 0.522048])
    torch.testing.assert_close(image[0, 0, 20, 30:35], golden, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(image.mean(), torch.tensor(0.012546), rtol=1e-3, atol=1e-5)


def test_bias_leaky_relu_definition():
    x = torch.tensor([[[-2.0], [3.0]]])  # [1, 2, 1]
    out = bias_leaky_relu(x, torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(out, torch.tensor([[[-1.5 * 0.2 * 2**0.5], [2.0 * 2**0.5]]]))


def test_noise_modes():
    gen = tiny_generator(seed=2)
    ws = codes(2, 10, 32, seed=3)
    with torch.no_grad():
        stored = gen(ws, noise_mode="stored")
        stored_explicit = ref.generator(gen.state_dict(), ws)
        zero = gen(ws, noise_mode="zero")
        zero_explicit = ref.generator(gen.state_dict(), ws, noise=[torch.zeros(1, 1, 1, 1)] * 9)
        r1 = gen(ws, noise_mode="random", generator=torch.Generator().manual_seed(4))
        r2 = gen(ws, noise_mode="random", generator=torch.Generator().manual_seed(4))
        r3 = gen(ws, noise_mode="random", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(stored, stored_explicit, rtol=0, atol=2e-5)
    torch.testing.assert_close(zero, zero_explicit, rtol=0, atol=2e-5)
    assert (stored - zero).abs().max() > 1e-2
    torch.testing.assert_close(r1, r2, rtol=0, atol=0)
    assert (r1 - r3).abs().max() > 1e-2
    # Random noise is drawn per sample; the stored maps are shared by every sample.
    with torch.no_grad():
        twins = gen(ws[:1].expand(2, -1, -1), noise_mode="random", generator=torch.Generator().manual_seed(4))
    assert (twins[0] - twins[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="unknown noise mode"):
        gen(ws, noise_mode="fresh")


def test_stored_noise_is_a_buffer_that_moves_with_the_model():
    gen = tiny_generator()
    names = [k for k in gen.state_dict() if k.startswith("noises.")]
    assert names == [f"noises.noise_{i}" for i in range(9)]
    assert gen.noises.noise_8.shape == (1, 1, 64, 64)
    assert gen.to(torch.float64).noises.noise_8.dtype == torch.float64


def test_mapping_network():
    gen = tiny_generator(seed=3)
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    for i in (1, 2):
        w, b = gen.state_dict()[f"style.{i}.weight"], gen.state_dict()[f"style.{i}.bias"]
        x = ref.fused_lrelu(F.linear(x, w * (0.01 / 32**0.5)), b * 0.01)
    with torch.no_grad():
        torch.testing.assert_close(gen.mapping(z), x)
        mean = gen.mean_latent(64, generator=torch.Generator().manual_seed(1))
    assert mean.shape == (32,)


def test_bad_codes_are_refused():
    with pytest.raises(ValueError, match=r"\[B, 10, 32\]"):
        tiny_generator()(torch.zeros(1, 18, 32))


def test_batched_form_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    import onnxruntime as ort  # in the dev extra
    gen = tiny_generator(seed=11, modulation="batched")
    path = tmp_path / "generator.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(gen, (codes(2, 10, 32, seed=0),), str(path), input_names=["ws"], output_names=["image"],
                      dynamic_shapes={"ws": {0: batch}}, dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in (1, 3):  # one graph serves batch sizes other than the one it was traced with
        ws = codes(size, 10, 32, seed=size)
        (image,) = session.run(None, {"ws": ws.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(image), gen(ws), rtol=0, atol=2e-5)
