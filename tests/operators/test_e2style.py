import dataclasses

import pytest
import torch

import official_reference as ref
from factories import REFERENCE_DIR, TINY, TINY_BLOCK_STARTS, images, make_e2style
from operators.e2style import E2Style, E2StyleConfig, E2StyleEncoder, EncoderConfig
from operators.presets import get_preset, register_preset
from engines import official_checkpoint


def reference_rows():
    return [line.rstrip("\n").split("\t") for line in open(REFERENCE_DIR / "e2style_stage2_checkpoint_keys.tsv")]


def test_official_preset_state_dict_is_the_released_layout():
    config = dataclasses.replace(get_preset("e2style-ffhq-1024"), stages=2)
    with torch.device("meta"):
        model = E2Style(config)
    ours = [[k, str(tuple(v.shape)), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    # latent_avg is a buffer of ours; the official files keep it beside the state_dict.
    assert ours[0] == ["latent_avg", "(18, 512)", "float32"]
    assert ours[1:] == reference_rows()  # same keys, shapes, dtypes and order
    encoder_params = sum(p.numel() for p in model.encoder_firststage.parameters())
    unused = sum(p.numel() for p in model.encoder_firststage.body[21:].parameters())
    assert (encoder_params, unused) == (111_241_792, 13_213_696)


def test_head_pooling_uses_pytorch_adaptive_windows():
    # A 32x32 map pooled to 7: windows [floor(i*32/7), ceil((i+1)*32/7)) overlap and differ in size.
    windows = [(0, 5), (4, 10), (9, 14), (13, 19), (18, 23), (22, 28), (27, 32)]
    torch.manual_seed(0)
    encoder = E2StyleEncoder(EncoderConfig(), 3).eval()
    pool = encoder.output_layer_3[1]
    x = torch.randn(1, 2, 32, 32)
    expected = torch.stack(
        [torch.stack([x[0, :, h0:h1, w0:w1].mean((1, 2)) for w0, w1 in windows]) for h0, h1 in windows]
    ).permute(2, 0, 1)
    torch.testing.assert_close(pool(x)[0], expected)


def test_matrix_pooling_has_the_adaptive_windows():
    from operators.e2style.encoder import MatrixAvgPool2d, adaptive_pool_matrix

    rows = adaptive_pool_matrix(32, 7)
    windows = [(0, 5), (4, 10), (9, 14), (13, 19), (18, 23), (22, 28), (27, 32)]
    assert [tuple(torch.nonzero(r)[[0, -1], 0].add(torch.tensor([0, 1])).tolist()) for r in rows] == windows
    torch.testing.assert_close(rows.sum(1), torch.ones(7, dtype=torch.float64), rtol=0, atol=1e-15)
    x = torch.randn(3, 2, 32, 32)
    torch.testing.assert_close(MatrixAvgPool2d(32, 7)(x), torch.nn.AdaptiveAvgPool2d(7)(x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pooling built for 32x32 inputs, got \\(30, 30\\)"):
        MatrixAvgPool2d(32, 7)(torch.zeros(1, 1, 30, 30))


def test_an_encoder_with_matrix_pooling_gives_the_same_codes():
    model = make_e2style(stages=1, seed=3)
    x = images(3, 3, model.config.image_size, seed=4)
    with torch.no_grad():
        adaptive = model.encoder_firststage(x)
        model.encoder_firststage.use_matrix_pooling(model.config.image_size)
        matrix = model.encoder_firststage(x)
    assert type(model.encoder_firststage.output_layer_3[1]).__name__ == "MatrixAvgPool2d"
    assert list(model.state_dict()) == list(make_e2style(stages=1, seed=3).state_dict())  # no new keys
    torch.testing.assert_close(matrix, adaptive, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="image size 36 does not halve evenly down to block 3"):
        model.encoder_firststage.use_matrix_pooling(36)


def test_w_plus_slot_order_deep_middle_shallow():
    model = make_e2style()
    x = images(1, 3, 32, seed=0)
    encoder = model.encoder_firststage
    with torch.no_grad():
        base = encoder(x)
        changed = {}
        for name in ("output_layer_3", "output_layer_4", "output_layer_5"):
            bias = getattr(encoder, name)[3].bias
            bias += 1.0
            changed[name] = ((encoder(x) - base).abs().amax(-1) > 0.5)[0].nonzero().flatten().tolist()
            bias -= 1.0
    assert changed == {"output_layer_3": list(range(0, 5)), "output_layer_4": [5, 6, 7], "output_layer_5": [8, 9]}


def test_last_block_is_stored_but_never_run():
    model = make_e2style()
    x = images(2, 3, 32, seed=1)
    with torch.no_grad():
        before = model.invert(x)[-1]
        for p in model.encoder_firststage.body[4:].parameters():
            p.fill_(float("nan"))
        after = model.invert(x)[-1]
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert any(k.startswith("encoder_firststage.body.4.") for k in model.state_dict())


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_stages_match_the_official_reference(stages):
    model = make_e2style(stages=stages, seed=10 + stages)
    x = images(3, 3, 32, seed=stages)
    ref_images, ref_codes = ref.e2style_forward(official_checkpoint(model), x, stages, TINY_BLOCK_STARTS, 32)
    with torch.no_grad():
        codes = model.invert(x)
        recon = model.synthesize(codes[-1])
    assert len(codes) == stages
    for ours, theirs in zip(codes, ref_codes):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(recon, ref_images, rtol=0, atol=1e-5)


def test_stage_semantics():
    model = make_e2style(stages=3, seed=4)
    x = images(2, 3, 32, seed=5)
    with torch.no_grad():
        first = model.encoder_firststage(x) + model.latent_avg  # latent_avg enters once, in stage 1
        codes = model.invert(x)
        torch.testing.assert_close(codes[0], first, rtol=0, atol=0)
        # Refinements are residual, fed the unclamped reconstruction of the previous stage.
        seen = []
        hook = model.encoder_refinestage_list[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        model.invert(x, stages=2)
        hook.remove()
        previous = model.synthesize(codes[0])
        torch.testing.assert_close(seen[0], torch.cat((x, previous), 1), rtol=0, atol=0)
        delta = model.encoder_refinestage_list[0](seen[0])
        torch.testing.assert_close(codes[1], codes[0] + delta, rtol=0, atol=0)
        # Fewer stages than the model has are a prefix of the full run.
        assert len(model.invert(x, stages=2)) == 2
        torch.testing.assert_close(model.invert(x, stages=2)[1], codes[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="3 stage"):
        model.invert(x, stages=4)


def test_refinement_sees_the_reconstruction_unclamped():
    model = make_e2style(stages=2, seed=6)
    with torch.no_grad():
        model.decoder.to_rgbs[-1].bias.fill_(3.0)  # push the raw image well outside [-1, 1]
        x = images(1, 3, 32, seed=7)
        seen = []
        model.encoder_refinestage_list[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        model.invert(x)
    assert seen[0][:, 3:].max() > 1.5


@pytest.mark.parametrize("channels", [1, 19])
def test_sketch_and_segmentation_first_stages(channels):
    model = make_e2style(input_channels=channels, seed=channels)
    assert model.encoder_firststage.input_layer[0].weight.shape == (16, channels, 3, 3)
    x = images(2, channels, 32, seed=0).clamp(0, 1)
    ref_images, ref_codes = ref.e2style_forward(official_checkpoint(model), x, 1, TINY_BLOCK_STARTS, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.invert(x)[0], ref_codes[0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="only have 1 stage"):
        dataclasses.replace(get_preset(TINY), input_channels=channels, stages=2)


def test_golden_codes():
    model = make_e2style(stages=2, seed=21)
    with torch.no_grad():
        codes = model.invert(images(1, 3, 32, seed=22))
    golden_stage1 = torch.tensor([1.238287, -0.310792, -0.399163, -0.685762])
    golden_stage2 = torch.tensor([-0.006836, -1.400194, 0.737351, 0.295471])
    torch.testing.assert_close(codes[0][0, 0, :4], golden_stage1, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(codes[1][0, 9, :4], golden_stage2, rtol=1e-4, atol=1e-4)


def test_config_validation():
    with pytest.raises(ValueError, match="encoder predicts 10 codes"):
        E2StyleConfig(encoder=EncoderConfig(head_codes=(5, 3, 2)))
    with pytest.raises(ValueError, match="must divide"):
        dataclasses.replace(get_preset(TINY), image_size=48)
    with pytest.raises(ValueError, match="multiples of se_reduction"):
        EncoderConfig(block_widths=(10, 20, 30, 40))


def test_wrong_image_size_is_refused():
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        make_e2style().invert(torch.zeros(1, 3, 64, 64))


def test_preset_registry_rejects_duplicates_and_lists_known_names():
    with pytest.raises(ValueError, match="already registered"):
        register_preset(TINY, get_preset(TINY))
    with pytest.raises(KeyError, match="e2style-ffhq-1024, tiny-64"):
        get_preset("huge")
