"""Metric network weights: the published layouts load, from paths and S3, hashed; anything else is
refused naming the file and the key."""

import hashlib

import fsspec
import pytest
import torch

from engines.checkpoints import CheckpointError
from factories import REFERENCE_DIR
from engines.metric_weights import (
    MetricWeightsError,
    load_metric_net,
    random_metric_weights,
    verified_state,
    write_random_metric_weights,
)
from operators.metric_nets import LPIPS


def sha256_of(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def save(state, path):
    torch.save(state, path)
    return str(path)


def split_lpips(state):
    trunk = {k: v for k, v in state.items() if k.startswith("features.")}
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    assert len(trunk) + len(heads) == len(state)
    return trunk, heads


@pytest.fixture(scope="module")
def alex_state():
    return random_metric_weights("lpips", seed=1, net="alex")


@pytest.fixture(scope="module")
def identity_state():
    return random_metric_weights("identity", seed=4)


def test_random_weights_have_the_published_keys_and_are_seeded(alex_state):
    assert list(alex_state) == [
        *(f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")),
        *(f"lin{k}.model.1.weight" for k in range(5)),
    ]
    assert [tuple(alex_state[f"lin{k}.model.1.weight"].shape) for k in range(5)] == [
        (1, 64, 1, 1), (1, 192, 1, 1), (1, 384, 1, 1), (1, 256, 1, 1), (1, 256, 1, 1)
    ]  # fmt: skip
    assert all((alex_state[f"lin{k}.model.1.weight"] >= 0).all() for k in range(5))
    again = random_metric_weights("lpips", seed=1, net="alex")
    other = random_metric_weights("lpips", seed=2, net="alex")
    assert all(torch.equal(alex_state[k], again[k]) for k in alex_state)
    assert not torch.equal(alex_state["features.0.weight"], other["features.0.weight"])
    vgg = random_metric_weights("lpips", net="vgg")
    assert [k for k in vgg if k.endswith(".weight") and k.startswith("features.")] == [
        f"features.{i}.weight" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    ]


def test_layouts_are_those_of_the_published_files(alex_state, identity_state):
    assert {k: tuple(v.shape) for k, v in alex_state.items() if k.endswith("weight") and k.startswith("features")} == {
        "features.0.weight": (64, 3, 11, 11),
        "features.3.weight": (192, 64, 5, 5),
        "features.6.weight": (384, 192, 3, 3),
        "features.8.weight": (256, 384, 3, 3),
        "features.10.weight": (256, 256, 3, 3),
    }
    # E2Style's first-stage encoder is initialised from model_ir_se50.pth, so its body is that file's body.
    official = {}
    for line in open(REFERENCE_DIR / "e2style_stage2_checkpoint_keys.tsv"):
        key, shape, _ = line.rstrip("\n").split("\t")
        if key.startswith(("encoder_firststage.body.", "encoder_firststage.input_layer.")):
            official[key.removeprefix("encoder_firststage.")] = shape
    ours = {k: str(tuple(v.shape)) for k, v in identity_state.items() if k.startswith(("body.", "input_layer."))}
    assert ours == official and len(ours) == 378 + 7
    tail = {k: tuple(v.shape) for k, v in identity_state.items() if k.startswith("output_layer.")}
    assert tail == {
        **{f"output_layer.0.{p}": (512,) for p in ("weight", "bias", "running_mean", "running_var")},
        "output_layer.0.num_batches_tracked": (),
        "output_layer.3.weight": (512, 25088),
        "output_layer.3.bias": (512,),
        **{f"output_layer.4.{p}": (512,) for p in ("weight", "bias", "running_mean", "running_var")},
        "output_layer.4.num_batches_tracked": (),
    }
    fid = random_metric_weights("fid")
    assert len(fid) == 94 * 6  # 94 convolutions, each with a batch norm
    assert {k: tuple(fid[k].shape) for k in ("Conv2d_1a_3x3.conv.weight", "Mixed_6e.branch7x7_2.conv.weight",
                                             "Mixed_7c.branch_pool.conv.weight", "Mixed_7b.branch3x3dbl_3b.bn.bias")} == {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Mixed_6e.branch7x7_2.conv.weight": (192, 192, 1, 7),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7b.branch3x3dbl_3b.bn.bias": (384,),
    }  # fmt: skip


def test_lpips_loads_from_one_file_or_trunk_and_heads(tmp_path, alex_state):
    combined = save(alex_state, tmp_path / "lpips_alex.pth")
    trunk, heads = split_lpips(alex_state)
    trunk_path, heads_path = save(trunk, tmp_path / "alexnet.pth"), save(heads, tmp_path / "alex.pth")

    one = load_metric_net("lpips", combined)
    two = load_metric_net("lpips", [trunk_path, heads_path], net="alex")
    assert one.network == two.network == "lpips-alex"
    assert one.sha256 == sha256_of(combined)
    assert two.sha256 == f"{sha256_of(trunk_path)}+{sha256_of(heads_path)}"
    assert two.provenance() == {
        "metric": "lpips",
        "network": "lpips-alex",
        "files": [{"uri": trunk_path, "sha256": sha256_of(trunk_path)}, {"uri": heads_path, "sha256": sha256_of(heads_path)}],
    }
    assert not one.module.training and not any(p.requires_grad for p in one.module.parameters())
    for key, value in alex_state.items():
        assert torch.equal(one.module.state_dict()[key], value) and torch.equal(two.module.state_dict()[key], value)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert one.module(x, 1 - x).item() == pytest.approx(two.module(x, 1 - x).item(), rel=1e-6)
        assert one.module(x, 1 - x).item() > 0


def test_lpips_net_is_recognised_and_checked(tmp_path):
    vgg_path = save(random_metric_weights("lpips", seed=3, net="vgg"), tmp_path / "vgg.pth")
    assert load_metric_net("lpips", vgg_path).network == "lpips-vgg"
    with pytest.raises(MetricWeightsError, match="hold the 'vgg' trunk, but net 'alex' was asked for"):
        load_metric_net("lpips", vgg_path, net="alex")


def test_lpips_heads_alone_are_refused_with_what_to_add(tmp_path, alex_state):
    _, heads = split_lpips(alex_state)
    heads_path = save(heads, tmp_path / "alex.pth")
    with pytest.raises(MetricWeightsError, match=r"alex.pth hold no trunk .*linear heads alone.*alexnet-owt-7be5be79.pth"):
        load_metric_net("lpips", heads_path)
    odd = dict(alex_state, **{"features.0.weight": torch.zeros(64, 3, 7, 7)})
    with pytest.raises(MetricWeightsError, match=r"features.0.weight is \[64, 3, 7, 7\], neither AlexNet's"):
        load_metric_net("lpips", save(odd, tmp_path / "odd.pth"))


def test_a_missing_key_is_named_with_the_file(tmp_path, alex_state):
    trunk, heads = split_lpips(alex_state)
    del heads["lin3.model.1.weight"]
    files = [save(trunk, tmp_path / "t.pth"), save(heads, tmp_path / "h.pth")]
    with pytest.raises(MetricWeightsError, match=r"LPIPS \(AlexNet\) weights .*t.pth, .*h.pth do not match the network: "
                       r"1 missing key\(s\): lin3.model.1.weight$"):  # fmt: skip
        load_metric_net("lpips", files)


def test_unexpected_mis_shaped_and_repeated_keys_are_named(tmp_path, identity_state):
    state = dict(identity_state)
    state["body.2.res_layer.1.weight"] = state["body.2.res_layer.1.weight"][:, :32]
    state["output_layer.9.weight"] = torch.zeros(3)
    path = save(state, tmp_path / "model_ir_se50.pth")
    with pytest.raises(MetricWeightsError) as error:
        load_metric_net("identity", path)
    text = str(error.value)
    assert text.startswith(f"identity (ArcFace IR-SE50) weights {path} do not match the network: ")
    assert f"1 unexpected key(s): output_layer.9.weight (in {path})" in text
    assert (
        f"1 mis-shaped key(s): body.2.res_layer.1.weight is [64, 32, 3, 3] float32 in {path}, "
        "[64, 64, 3, 3] float32 in the network"
    ) in text
    assert "missing" not in text

    alex = random_metric_weights("lpips", seed=1)
    trunk, heads = split_lpips(alex)
    heads["features.0.bias"] = trunk["features.0.bias"]
    files = [save(trunk, tmp_path / "t.pth"), save(heads, tmp_path / "h.pth")]
    with pytest.raises(MetricWeightsError, match=r"1 repeated key\(s\): features.0.bias \(in .*t.pth and .*h.pth\)"):
        load_metric_net("lpips", files)


def test_a_counter_of_the_wrong_type_is_mis_shaped(tmp_path, identity_state):
    state = dict(identity_state)
    state["input_layer.1.num_batches_tracked"] = torch.tensor(0.0)
    with pytest.raises(MetricWeightsError, match=r"input_layer.1.num_batches_tracked is \[\] float32 in .*, \[\] int64 in the network"):
        load_metric_net("identity", save(state, tmp_path / "ir.pth"))


def test_identity_file_without_counters_in_half_precision_and_legacy_format_loads(tmp_path, identity_state):
    # TreB1eN's file predates num_batches_tracked and torchvision's files predate the zip format.
    old = {k: v.half() for k, v in identity_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "model_ir_se50.pth"
    torch.save(old, path, _use_new_zipfile_serialization=False)
    net = load_metric_net("identity", str(path))
    assert net.network == "arcface-ir-se50" and net.sha256 == sha256_of(path)
    loaded = net.module.state_dict()
    for key, value in old.items():
        assert loaded[key].dtype == torch.float32 and torch.equal(loaded[key], value.float())
    assert all(loaded[k].item() == 0 for k in loaded if k.endswith("num_batches_tracked"))
    assert not any(t.is_meta for t in [*net.module.parameters(), *net.module.buffers()])


def test_published_classifier_layers_are_accepted_only_with_their_shapes(tmp_path):
    fid = random_metric_weights("fid", seed=7)
    with_fc = dict(fid, **{"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    net = load_metric_net("fid", save(with_fc, tmp_path / "pt_inception-2015-12-05-6726825d.pth"))
    assert net.network == "inception-v3-fid" and "fc.weight" not in net.module.state_dict()
    imagenet_fc = dict(fid, **{"fc.weight": torch.zeros(1000, 2048)})
    with pytest.raises(MetricWeightsError, match=r"fc.weight is \[1000, 2048\] in .*, \[1008, 2048\] in the published file"):
        load_metric_net("fid", save(imagenet_fc, tmp_path / "inception_v3_google.pth"))

    # torchvision's AlexNet file carries its classifier (checked here without the 230 MB of it).
    alex = random_metric_weights("lpips", seed=1)
    classifier = {
        "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,), "classifier.4.weight": (4096, 4096),
        "classifier.4.bias": (4096,), "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
    }  # fmt: skip
    trunk, heads = split_lpips(alex)
    trunk.update({k: torch.empty(shape, device="meta") for k, shape in classifier.items()})
    state = verified_state("lpips-alex", LPIPS("alex"), [("alexnet-owt-7be5be79.pth", trunk), ("alex.pth", heads)])
    assert set(state) == set(alex)
    trunk["classifier.6.weight"] = torch.empty(10, 4096, device="meta")
    with pytest.raises(MetricWeightsError, match=r"classifier.6.weight is \[10, 4096\] in alexnet-owt-7be5be79.pth"):
        verified_state("lpips-alex", LPIPS("alex"), [("alexnet-owt-7be5be79.pth", trunk), ("alex.pth", heads)])


def test_files_that_are_not_state_dicts_are_refused(tmp_path):
    missing = str(tmp_path / "nowhere.pth")
    with pytest.raises(MetricWeightsError, match=f"FID weights: checkpoint {missing} does not exist"):
        load_metric_net("fid", missing)
    wrapped = save({"state_dict": {"input_layer.0.weight": torch.zeros(64, 3, 3, 3)}}, tmp_path / "wrapped.pth")
    with pytest.raises(MetricWeightsError, match="entry 'state_dict' is a dict, not a tensor"):
        load_metric_net("identity", wrapped)
    with pytest.raises(MetricWeightsError, match="hold a list, not a state_dict"):
        load_metric_net("identity", save([torch.zeros(1)], tmp_path / "list.pth"))
    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(MetricWeightsError, match="text.pth is not a readable PyTorch file"):
        load_metric_net("lpips", str(tmp_path / "text.pth"))
    # A pickled object is never executed (weights_only=True).
    with pytest.raises(MetricWeightsError, match="not loaded for safety"):
        load_metric_net("identity", save({"x": torch.nn.ReLU()}, tmp_path / "object.pth"))
    assert issubclass(MetricWeightsError, CheckpointError)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="metric must be one of"):
        load_metric_net("psnr", "x.pth")
    with pytest.raises(ValueError, match=r"identity weights must be one path"):
        load_metric_net("identity", ["a.pth", "b.pth"])
    with pytest.raises(ValueError, match=r"lpips weights must be a path, or \[trunk, heads\]"):
        load_metric_net("lpips", [])
    with pytest.raises(ValueError, match="LPIPS net must be one of"):
        load_metric_net("lpips", "x.pth", net="squeeze")


def test_weights_on_s3_load_with_storage_options(s3_server, tmp_path):
    options = {"endpoint_url": s3_server}
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir("metric-weights")
    uri = "s3://metric-weights/lpips/vgg.pth"
    digest = write_random_metric_weights("lpips", uri, seed=9, net="vgg", storage_options=options)
    assert not fs.exists(uri + ".partial")
    net = load_metric_net("lpips", uri, storage_options=options)
    assert net.network == "lpips-vgg" and net.sha256 == digest == hashlib.sha256(fs.cat(uri)).hexdigest()
    expected = random_metric_weights("lpips", seed=9, net="vgg")
    assert all(torch.equal(net.module.state_dict()[k], v) for k, v in expected.items())
