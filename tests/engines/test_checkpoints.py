import argparse
import math

import fsspec
import numpy as np
import pytest
import torch

import official_reference as ref
from engines import CheckpointError, load_generator, load_inverter, official_checkpoint
from factories import REFERENCE_DIR, OFFICIAL_BLOCK_STARTS, TINY, TINY_BLOCK_STARTS, images, make_e2style, write_official


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {stages: write_official(make_e2style(stages=stages, seed=stages), root / f"s{stages}.pt") for stages in (1, 2, 3)}


def edited(tmp_path, source, change):
    ckpt = torch.load(source, weights_only=True)
    change(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("stored,asked", [(1, 1), (2, 1), (2, 2), (3, 2), (3, 3)])
def test_official_files_load_and_match_the_reference(tiny_files, stored, asked):
    inverter = load_inverter(str(tiny_files[stored]), stages=asked, device="cpu")
    assert (inverter.stages, inverter.info.stages_stored, inverter.info.preset) == (asked, stored, TINY)
    ckpt = torch.load(tiny_files[stored], weights_only=True)
    x = images(2, 3, 32, seed=asked)
    ref_images, ref_codes = ref.e2style_forward(ckpt, x, asked, TINY_BLOCK_STARTS, 32)
    per_stage = inverter.invert(x, all_stages=True)
    assert len(per_stage) == asked
    for ours, theirs in zip(per_stage, ref_codes):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(inverter.invert(x), per_stage[-1], rtol=0, atol=0)
    torch.testing.assert_close(inverter.synthesize(per_stage[-1]), ref_images, rtol=0, atol=1e-5)


def test_default_is_every_stored_stage(tiny_files):
    assert load_inverter(str(tiny_files[3])).stages == 3
    assert load_inverter(str(tiny_files[3]), stages=np.int64(2)).stages == 2
    with pytest.raises(CheckpointError, match="asked for True"):
        load_inverter(str(tiny_files[3]), stages=True)


def test_gap_in_refinement_encoders(tiny_files, tmp_path):
    def drop_first_refiner(ckpt):
        sd = ckpt["state_dict"]
        for key in [k for k in sd if k.startswith("encoder_refinestage_list.0.")]:
            del sd[key]

    with pytest.raises(CheckpointError, match=r"refinement encoders \[1\] are not numbered 0..0"):
        load_inverter(str(edited(tmp_path, tiny_files[3], drop_first_refiner)))


@pytest.mark.parametrize("asked", [4, 0, -1])
def test_more_stages_than_stored_is_an_error_naming_the_file(tiny_files, asked):
    with pytest.raises(CheckpointError, match=rf"{tiny_files[3]} holds 3 stage\(s\).*asked for {asked}"):
        load_inverter(str(tiny_files[3]), stages=asked)


def test_fsspec_urls(tiny_files, tmp_path):
    data = tiny_files[2].read_bytes()
    with fsspec.open("memory://models/e2style.pt", "wb") as f:
        f.write(data)
    from_memory = load_inverter("memory://models/e2style.pt", stages=2)
    from_file_url = load_inverter(f"file://{tiny_files[2]}", stages=2)
    x = images(1, 3, 32, seed=0)
    torch.testing.assert_close(from_memory.invert(x), from_file_url.invert(x), rtol=0, atol=0)
    assert from_memory.info.uri == "memory://models/e2style.pt"


def test_missing_extra_and_misshaped_keys_are_all_listed(tiny_files, tmp_path):
    def damage(ckpt):
        sd = ckpt["state_dict"]
        del sd["decoder.conv1.noise.weight"]
        sd["encoder_firststage.extra_head.weight"] = torch.zeros(3)
        sd["decoder.to_rgb1.bias"] = torch.zeros(1, 4, 1, 1)

    path = edited(tmp_path, tiny_files[1], damage)
    with pytest.raises(CheckpointError) as err:
        load_inverter(str(path))
    message = str(err.value)
    assert str(path) in message and "closest is the 'tiny-64' preset" in message
    assert "1 missing key(s): decoder.conv1.noise.weight" in message
    assert "1 unexpected key(s): encoder_firststage.extra_head.weight" in message
    assert "1 mis-shaped key(s): decoder.to_rgb1.bias is [1, 4, 1, 1] in the file, [1, 3, 1, 1] in the model" in message


def test_given_config_is_verified_strictly(tiny_files):
    from operators.presets import get_preset

    inverter = load_inverter(str(tiny_files[1]), config=get_preset(TINY))
    assert inverter.info.preset is None
    with pytest.raises(CheckpointError, match="closest is the given config: .*mis-shaped"):
        load_inverter(str(tiny_files[1]), config=get_preset("e2style-ffhq-1024"))


def test_opts_and_file_disagree(tiny_files, tmp_path):
    path = edited(tmp_path, tiny_files[2], lambda c: c["opts"].update(training_stage=3))
    with pytest.raises(CheckpointError, match=r"opts\['training_stage'\] is 3 but the state_dict holds 2"):
        load_inverter(str(path))
    path = edited(tmp_path, tiny_files[1], lambda c: c.pop("latent_avg"))
    with pytest.raises(CheckpointError, match="no 'latent_avg'"):
        load_inverter(str(path))


def test_latent_avg_off(tiny_files, tmp_path):
    def no_avg(ckpt):
        ckpt["opts"]["start_from_latent_avg"] = False
        ckpt.pop("latent_avg")

    inverter = load_inverter(str(edited(tmp_path, tiny_files[1], no_avg)))
    with_avg = load_inverter(str(tiny_files[1]))
    x = images(1, 3, 32, seed=3)
    torch.testing.assert_close(inverter.invert(x) + with_avg.model.latent_avg, with_avg.invert(x), rtol=0, atol=1e-6)


def test_half_precision_file_loads_as_float32(tiny_files, tmp_path):
    def to_half(ckpt):
        ckpt["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}

    inverter = load_inverter(str(edited(tmp_path, tiny_files[1], to_half)))
    assert inverter.model.decoder.conv1.conv.weight.dtype == torch.float32


def test_sketch_and_segmentation_files(tmp_path):
    for channels, task in ((1, "celebs_sketch_to_face"), (19, "celebs_seg_to_face")):
        path = write_official(make_e2style(input_channels=channels, seed=channels), tmp_path / f"{channels}.pt", task=task)
        inverter = load_inverter(str(path))
        assert (inverter.config.input_channels, inverter.info.task) == (channels, task)
        ckpt = torch.load(path, weights_only=True)
        x = images(1, channels, 32, seed=1).clamp(0, 1)
        _, ref_codes = ref.e2style_forward(ckpt, x, 1, TINY_BLOCK_STARTS, 32)
        torch.testing.assert_close(inverter.invert(x), ref_codes[0], rtol=0, atol=1e-5)


def test_files_of_another_kind(tiny_files, tmp_path):
    model = make_e2style()
    gen_state = {k[len("decoder.") :]: v for k, v in official_checkpoint(model)["state_dict"].items() if k.startswith("decoder.")}
    rosinality = tmp_path / "stylegan2.pt"
    torch.save({"g_ema": gen_state, "latent_avg": torch.zeros(32)}, rosinality)
    with pytest.raises(CheckpointError, match=rf"{rosinality} is a StyleGAN2 checkpoint \(g_ema\); expected an E2Style"):
        load_inverter(str(rosinality))

    psp = tmp_path / "psp.pt"
    torch.save({"state_dict": {"encoder.input_layer.0.weight": torch.zeros(1)}, "opts": {}}, psp)
    with pytest.raises(CheckpointError, match="pSp and e4e files are not E2Style files"):
        load_inverter(str(psp))

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=rf"{text} is not a readable PyTorch file"):
        load_inverter(str(text))

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_files[1].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=rf"{truncated} is not a readable PyTorch file"):
        load_inverter(str(truncated))

    with pytest.raises(CheckpointError, match="does not exist"):
        load_inverter(str(tmp_path / "absent.pt"))
    with pytest.raises(CheckpointError, match="a list"):
        torch.save([1, 2], tmp_path / "list.pt")
        load_inverter(str(tmp_path / "list.pt"))


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "opts": Payload()}, path)
    with pytest.raises(CheckpointError, match="not loaded for safety"):
        load_inverter(str(path))
    assert "must never run" not in capsys.readouterr().out


def test_generators_from_rosinality_and_e2style_files(tmp_path):
    model = make_e2style(stages=2, seed=9)
    e2style_file = write_official(model, tmp_path / "e2style.pt")
    gen_state = {k[len("decoder.") :]: v for k, v in official_checkpoint(model)["state_dict"].items() if k.startswith("decoder.")}
    rosinality = tmp_path / "stylegan2.pt"
    # A training file of rosinality's also carries its argparse options, which load as plain data.
    torch.save({"g_ema": gen_state, "latent_avg": model.latent_avg[0].clone(), "args": argparse.Namespace(size=64)}, rosinality)
    ws = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(0))
    expected = ref.generator(gen_state, ws)
    for path in (rosinality, e2style_file):
        synth = load_generator(str(path))
        assert synth.info.preset == TINY
        torch.testing.assert_close(synth.synthesize(ws), expected, rtol=0, atol=2e-5)
        torch.testing.assert_close(synth.synthesize(ws, size=32), torch.nn.functional.adaptive_avg_pool2d(expected, 32), rtol=0, atol=2e-5)
        torch.testing.assert_close(synth.latent_avg, model.latent_avg, rtol=0, atol=0)
    assert load_generator(str(rosinality)).info.kind == "stylegan2"


def official_size_state(seed: int) -> dict:
    """Every key of a released stage-2 file, with the listed shape and well-scaled seeded values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for line in open(REFERENCE_DIR / "e2style_stage2_checkpoint_keys.tsv"):
        key, shape_text, dtype = line.rstrip("\n").split("\t")
        shape = tuple(int(s) for s in shape_text.strip("()").split(",") if s.strip())
        if dtype == "int64":
            state[key] = torch.tensor(0)
        elif key.endswith("kernel"):
            state[key] = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64 * 4
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif len(shape) == 1 and ("res_layer.2" in key or "input_layer.2" in key):
            state[key] = torch.full(shape, 0.25)
        elif len(shape) == 1 and key.endswith("weight") and "noise" not in key:
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) <= 1:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif ".conv.weight" in key or "noises." in key or key.endswith("input.input") or ".style." in key:
            state[key] = torch.randn(shape, generator=gen)
        else:
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    return state


@pytest.mark.slow
def test_official_size_stage2_file_loads_and_matches_the_reference(tmp_path):
    opts = {"dataset_type": "ffhq_encode", "training_stage": 2, "input_nc": 3, "label_nc": 0,
            "start_from_latent_avg": True, "learn_in_w": False, "device": "cuda:0", "checkpoint_path": "stage1.pt"}
    ckpt = {"state_dict": official_size_state(0), "opts": opts, "latent_avg": torch.randn(512).repeat(18, 1)}
    path = tmp_path / "best_model.pt"
    torch.save(ckpt, path)
    inverter = load_inverter(str(path), stages=2)
    assert (inverter.info.preset, inverter.stages) == ("e2style-ffhq-1024", 2)
    x = images(1, 3, 256, seed=0)
    codes = inverter.invert(x, all_stages=True)
    recon = inverter.synthesize(codes[-1])
    ref_images, ref_codes = ref.e2style_forward(ckpt, x, 2, OFFICIAL_BLOCK_STARTS, 256)
    for ours, theirs in zip(codes, ref_codes):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    torch.testing.assert_close(recon, ref_images, rtol=0, atol=1e-4)
    assert load_inverter(str(path), stages=1).stages == 1
