"""The metric networks against float64 re-statements written from their published definitions, with
seeded weights in the published layouts; and FID from merged statistics."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engines.metric_weights import random_metric_weights
from operators.metric_nets import (
    LPIPS,
    ArcFaceIRSE50,
    FeatureStatistics,
    FIDInceptionV3,
    face_region,
    fid_from_statistics,
    frechet_distance,
    identity_similarity,
)


def images(seed, shape):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def noisy(x, seed, amount=0.1):
    return (x + amount * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def loaded(module, metric, seed, net="alex"):
    module.load_state_dict(random_metric_weights(metric, seed, net))
    return module.eval()


def s64(state):
    return {k: v.double() for k, v in state.items()}


def batch_norm(h, state, prefix, eps=1e-5):
    shape = (1, -1) + (1,) * (h.ndim - 2)
    mean, var = state[f"{prefix}.running_mean"].view(shape), state[f"{prefix}.running_var"].view(shape)
    return (h - mean) / torch.sqrt(var + eps) * state[f"{prefix}.weight"].view(shape) + state[f"{prefix}.bias"].view(shape)


# ---- LPIPS ----------------------------------------------------------------------------------------

# (stack index of each convolution, stride, padding), max pools (3, stride 2 / 2, stride 2) before the
# listed indices: torchvision's AlexNet and VGG16 feature stacks; LPIPS compares the ReLU after each
# convolution that ends a group.
ALEX_GROUPS = [[(0, 4, 2)], [(3, 1, 2)], [(6, 1, 1)], [(8, 1, 1)], [(10, 1, 1)]]
ALEX_POOL_BEFORE = {1, 2}  # groups preceded by a 3x3 stride-2 max pool
VGG_GROUPS = [[(0, 1, 1), (2, 1, 1)], [(5, 1, 1), (7, 1, 1)], [(10, 1, 1), (12, 1, 1), (14, 1, 1)],
              [(17, 1, 1), (19, 1, 1), (21, 1, 1)], [(24, 1, 1), (26, 1, 1), (28, 1, 1)]]  # fmt: skip


def lpips_reference(state, x, y, net):
    s = s64(state)
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def layers(img):
        h = (img.double() * 2 - 1 - shift) / scale
        out = []
        for g, group in enumerate(ALEX_GROUPS if net == "alex" else VGG_GROUPS):
            if net == "alex" and g in ALEX_POOL_BEFORE:
                h = F.max_pool2d(h, 3, 2)
            if net == "vgg" and g:
                h = F.max_pool2d(h, 2, 2)
            for index, stride, padding in group:
                h = torch.relu(F.conv2d(h, s[f"features.{index}.weight"], s[f"features.{index}.bias"], stride, padding))
            out.append(h)
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (fx, fy) in enumerate(zip(layers(x), layers(y))):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weights = s[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        total += ((nx - ny) ** 2 * weights).sum(1).mean((1, 2))
    return total


@pytest.mark.parametrize("net, size, golden", [("alex", 64, [0.01966004, 0.01979050]), ("vgg", 32, [0.02047209, 0.01944771])])
def test_lpips_equals_its_definition(net, size, golden):
    model = loaded(LPIPS(net), "lpips", 3, net)
    x = images(0, (2, 3, size, size))
    y = noisy(x, 1)
    with torch.no_grad():
        got = model(x, y)
        assert torch.equal(model(x, x), torch.zeros(2))
        torch.testing.assert_close(model(y, x), got)
    np.testing.assert_allclose(got.numpy(), lpips_reference(model.state_dict(), x, y, net).numpy(), rtol=1e-5)
    np.testing.assert_allclose(got.numpy(), golden, rtol=1e-4)
    # More noise, further apart.
    with torch.no_grad():
        assert (model(x, noisy(x, 1, 0.3)) > got).all()


def test_lpips_refuses_unknown_nets_and_mismatched_batches():
    with pytest.raises(ValueError, match="'squeeze'"):
        LPIPS("squeeze")
    model = LPIPS("alex")
    with pytest.raises(ValueError, match="one shape"):
        model(images(0, (2, 3, 64, 64)), images(0, (1, 3, 64, 64)))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(images(0, (1, 1, 64, 64)), images(0, (1, 1, 64, 64)))


# ---- identity -------------------------------------------------------------------------------------


def adaptive_mean(image: np.ndarray, out: int) -> np.ndarray:
    """Average pooling of [C, S, S] to out x out: window i spans [floor(i S / out), ceil((i + 1) S / out))."""
    size = image.shape[-1]
    bounds = [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]
    result = np.zeros(image.shape[:-2] + (out, out))
    for i, (r0, r1) in enumerate(bounds):
        for j, (c0, c1) in enumerate(bounds):
            result[..., i, j] = image[..., r0:r1, c0:c1].mean((-2, -1))
    return result


def test_face_region_is_the_psp_crop_pooled_to_112():
    x = images(4, (1, 3, 256, 256)).double()
    expected = adaptive_mean(x[0, :, 35:223, 32:220].numpy(), 112)
    np.testing.assert_allclose(face_region(x)[0].numpy(), expected, rtol=0, atol=1e-12)
    # A 1024 px face is box-averaged 4x4 to 256 px first, as pSp pools its generator's output.
    big = x.repeat_interleave(4, 2).repeat_interleave(4, 3)
    np.testing.assert_allclose(face_region(big).numpy(), face_region(x).numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="RGB"):
        face_region(x[:, :1])


def arcface_reference(state, faces):
    """IR-SE50 on [-1, 1] 112 px faces in float64: 3+4+14+3 residual units with squeeze-excitation."""
    s = s64(state)
    h = F.conv2d(faces.double(), s["input_layer.0.weight"], padding=1)
    h = F.prelu(batch_norm(h, s, "input_layer.1"), s["input_layer.2.weight"])
    unit = 0
    for count in (3, 4, 14, 3):
        for u in range(count):
            p, stride = f"body.{unit}", 2 if u == 0 else 1
            r = F.conv2d(batch_norm(h, s, f"{p}.res_layer.0"), s[f"{p}.res_layer.1.weight"], padding=1)
            r = F.prelu(r, s[f"{p}.res_layer.2.weight"])
            r = batch_norm(F.conv2d(r, s[f"{p}.res_layer.3.weight"], stride=stride, padding=1), s, f"{p}.res_layer.4")
            squeeze = torch.relu(F.conv2d(r.mean((2, 3), keepdim=True), s[f"{p}.res_layer.5.fc1.weight"]))
            r = r * torch.sigmoid(F.conv2d(squeeze, s[f"{p}.res_layer.5.fc2.weight"]))
            if f"{p}.shortcut_layer.0.weight" in s:
                shortcut = batch_norm(F.conv2d(h, s[f"{p}.shortcut_layer.0.weight"], stride=stride), s, f"{p}.shortcut_layer.1")
            else:
                shortcut = h[:, :, ::stride, ::stride]
            h = r + shortcut
            unit += 1
    h = batch_norm(h, s, "output_layer.0").flatten(1)
    h = batch_norm(h @ s["output_layer.3.weight"].T + s["output_layer.3.bias"], s, "output_layer.4")
    return h / h.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def arcface():
    return loaded(ArcFaceIRSE50(), "identity", 5)


def test_identity_embedding_equals_its_definition(arcface):
    x = images(6, (1, 3, 256, 256))
    with torch.no_grad():
        got = arcface(x)
    assert got.shape == (1, 512)
    faces = torch.from_numpy(adaptive_mean(x[0, :, 35:223, 32:220].double().numpy(), 112))[None]
    expected = arcface_reference(arcface.state_dict(), faces * 2 - 1)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=2e-5)
    assert got.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_identity_similarity_of_a_face_with_itself_is_one(arcface):
    x = images(6, (2, 3, 256, 256))
    with torch.no_grad():
        ex, ey = arcface(x), arcface(noisy(x[:1], 7))
    np.testing.assert_allclose(identity_similarity(ex, ex).numpy(), [1.0, 1.0], rtol=0, atol=1e-12)
    same, other = identity_similarity(ex[:1], ey), identity_similarity(ex[1:], ey)
    torch.testing.assert_close(same, identity_similarity(ey, ex[:1]))
    assert same.item() < 1 and same.item() > other.item()  # a noisy copy is nearer than another image
    assert [same.item(), other.item()] == pytest.approx([0.759025, 0.577331], abs=1e-4)
    # Cosine similarity does not depend on the embeddings' lengths.
    torch.testing.assert_close(identity_similarity(3 * ex[:1], ey), same)
    with pytest.raises(ValueError, match="pairs embeddings"):
        identity_similarity(ex, ey)


# ---- FID Inception --------------------------------------------------------------------------------


def inception_reference(state, x):
    """pool3 of the FID Inception on prepared inputs, float64, from the TensorFlow graph's definition."""
    s = s64(state)

    def conv(h, name, stride=1, padding=0):
        h = F.conv2d(h, s[f"{name}.conv.weight"], stride=stride, padding=padding)
        return torch.relu(batch_norm(h, s, f"{name}.bn", eps=1e-3))

    def mean_of_valid(h):  # 3x3 mean over the window's pixels inside the image (padding not counted)
        total = F.conv2d(F.pad(h, (1, 1, 1, 1)), torch.ones(h.shape[1], 1, 3, 3, dtype=h.dtype), groups=h.shape[1])
        count = F.conv2d(F.pad(torch.ones_like(h[:1, :1]), (1, 1, 1, 1)), torch.ones(1, 1, 3, 3, dtype=h.dtype))
        return total / count

    def chain(h, p, steps):
        for name, padding, stride in steps:
            h = conv(h, f"{p}.{name}" if p else name, stride, padding)
        return h

    row, col = (0, 3), (3, 0)  # paddings of 1x7 and 7x1 convolutions
    h = chain(x.double(), "", [("Conv2d_1a_3x3", 0, 2), ("Conv2d_2a_3x3", 0, 1), ("Conv2d_2b_3x3", 1, 1)])
    h = chain(F.max_pool2d(h, 3, 2), "", [("Conv2d_3b_1x1", 0, 1), ("Conv2d_4a_3x3", 0, 1)])
    h = F.max_pool2d(h, 3, 2)
    for m in ("5b", "5c", "5d"):
        p = f"Mixed_{m}"
        h = torch.cat([
            conv(h, f"{p}.branch1x1"),
            chain(h, p, [("branch5x5_1", 0, 1), ("branch5x5_2", 2, 1)]),
            chain(h, p, [("branch3x3dbl_1", 0, 1), ("branch3x3dbl_2", 1, 1), ("branch3x3dbl_3", 1, 1)]),
            conv(mean_of_valid(h), f"{p}.branch_pool"),
        ], 1)  # fmt: skip
    p = "Mixed_6a"
    h = torch.cat([
        conv(h, f"{p}.branch3x3", stride=2),
        chain(h, p, [("branch3x3dbl_1", 0, 1), ("branch3x3dbl_2", 1, 1), ("branch3x3dbl_3", 0, 2)]),
        F.max_pool2d(h, 3, 2),
    ], 1)  # fmt: skip
    for m in ("6b", "6c", "6d", "6e"):
        p = f"Mixed_{m}"
        h = torch.cat([
            conv(h, f"{p}.branch1x1"),
            chain(h, p, [("branch7x7_1", 0, 1), ("branch7x7_2", row, 1), ("branch7x7_3", col, 1)]),
            chain(h, p, [("branch7x7dbl_1", 0, 1), ("branch7x7dbl_2", col, 1), ("branch7x7dbl_3", row, 1),
                         ("branch7x7dbl_4", col, 1), ("branch7x7dbl_5", row, 1)]),
            conv(mean_of_valid(h), f"{p}.branch_pool"),
        ], 1)  # fmt: skip
    p = "Mixed_7a"
    h = torch.cat([
        chain(h, p, [("branch3x3_1", 0, 1), ("branch3x3_2", 0, 2)]),
        chain(h, p, [("branch7x7x3_1", 0, 1), ("branch7x7x3_2", row, 1), ("branch7x7x3_3", col, 1),
                     ("branch7x7x3_4", 0, 2)]),
        F.max_pool2d(h, 3, 2),
    ], 1)  # fmt: skip
    for m, pool in (("7b", mean_of_valid), ("7c", lambda t: F.max_pool2d(t, 3, 1, 1))):
        p = f"Mixed_{m}"
        single = conv(h, f"{p}.branch3x3_1")
        double = chain(h, p, [("branch3x3dbl_1", 0, 1), ("branch3x3dbl_2", 1, 1)])
        h = torch.cat([
            conv(h, f"{p}.branch1x1"),
            conv(single, f"{p}.branch3x3_2a", padding=(0, 1)), conv(single, f"{p}.branch3x3_2b", padding=(1, 0)),
            conv(double, f"{p}.branch3x3dbl_3a", padding=(0, 1)), conv(double, f"{p}.branch3x3dbl_3b", padding=(1, 0)),
            conv(pool(h), f"{p}.branch_pool"),
        ], 1)  # fmt: skip
    return h.mean((2, 3))


@pytest.fixture(scope="module")
def inception():
    return loaded(FIDInceptionV3(), "fid", 8)


def test_inception_pool3_equals_its_definition(inception):
    x = images(9, (2, 3, 107, 107)) * 2 - 1  # small, yet leaves 2x2 maps for the last blocks to pool
    with torch.no_grad():
        got = inception.pool3(x)
    assert got.shape == (2, 2048)
    assert (got[0] - got[1]).abs().max() > 0.01
    expected = inception_reference(inception.state_dict(), x)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    assert expected.std() > 0.05  # seeded weights keep the features alive


def bilinear_half_pixel(image: np.ndarray, out: int) -> np.ndarray:
    """Bilinear resize of [C, S, S] to out x out, sampling at pixel centres (align_corners=False)."""
    size = image.shape[-1]
    coords = np.clip((np.arange(out) + 0.5) * size / out - 0.5, 0, size - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, size - 1)
    frac = coords - low
    rows = image[:, low] * (1 - frac)[:, None] + image[:, high] * frac[:, None]
    return rows[:, :, low] * (1 - frac) + rows[:, :, high] * frac


def test_inception_input_is_resized_to_299_and_scaled_to_minus_one_one():
    x = images(10, (1, 3, 128, 128))
    expected = bilinear_half_pixel(x[0].double().numpy(), 299) * 2 - 1
    np.testing.assert_allclose(FIDInceptionV3.prepare(x.double())[0].numpy(), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="RGB"):
        FIDInceptionV3.prepare(x[:, :2])


def test_inception_features_golden(inception):
    with torch.no_grad():
        got = inception(images(10, (1, 3, 128, 128)))
    assert got.shape == (1, 2048)
    assert got[0, :4].tolist() == pytest.approx([0.086552, 0.007856, 0.456058, 0.007473], abs=1e-5)


# ---- Fréchet distance and statistics --------------------------------------------------------------


def random_gaussian(seed, dim, samples):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim))
    return rng.normal(size=(samples, dim)) @ mixing + rng.normal(size=dim)


def fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of two sample sets: means, covariances (N - 1), and Tr((S1 S2)^(1/2)) as the sum
    of the square roots of the eigenvalues of S1 S2 (a general eigensolver, not a symmetric one)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * root_trace)


def test_frechet_distance_equals_its_definition():
    a, b = random_gaussian(0, 12, 200), random_gaussian(1, 12, 150)
    stats_a, stats_b = FeatureStatistics.of(torch.from_numpy(a)), FeatureStatistics.of(torch.from_numpy(b))
    assert fid_from_statistics(stats_a, stats_b) == pytest.approx(fid_reference(a, b), rel=1e-10)
    assert fid_from_statistics(stats_a, stats_a) == pytest.approx(0.0, abs=1e-9)
    # Diagonal covariances: the distance is |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    va, vb = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = 3.0 + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance(np.zeros(3), np.diag(va), np.ones(3), np.diag(vb)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_with_fewer_samples_than_dimensions():
    a, b = random_gaussian(2, 40, 10), random_gaussian(3, 40, 12)  # both covariances singular
    got = fid_from_statistics(FeatureStatistics.of(torch.from_numpy(a)), FeatureStatistics.of(torch.from_numpy(b)))
    assert got == pytest.approx(fid_reference(a, b), rel=1e-7)


def test_merged_shard_statistics_give_the_one_pass_fid():
    features = torch.from_numpy(random_gaussian(4, 16, 301)).float()  # float32, as the network returns
    other = FeatureStatistics.of(torch.from_numpy(random_gaussian(5, 16, 120)))
    one_pass = FeatureStatistics.of(features)
    shards = [FeatureStatistics.of(features[:7]), FeatureStatistics.of(features[7:150]), FeatureStatistics.zeros(16)]
    shards[2].update(features[150:200])
    shards[2].update(features[200:])
    merged = shards[2] + shards[0] + shards[1]  # any order
    assert merged.count == one_pass.count == 301
    torch.testing.assert_close(merged.total, one_pass.total, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(merged.outer, one_pass.outer, rtol=1e-12, atol=1e-10)
    assert fid_from_statistics(merged, other) == pytest.approx(fid_from_statistics(one_pass, other), rel=1e-12)
    # The mean and covariance are numpy's of all the features.
    f = features.double().numpy()
    np.testing.assert_allclose(merged.mean().numpy(), f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.covariance().numpy(), np.cov(f, rowvar=False), rtol=1e-10, atol=1e-12)


def test_statistics_round_trip_and_refuse_bad_fields():
    stats = FeatureStatistics.of(torch.from_numpy(random_gaussian(6, 4, 9)))
    back = FeatureStatistics.from_dict(stats.as_dict())
    assert back.count == 9 and torch.equal(back.total, stats.total) and torch.equal(back.outer, stats.outer)
    stored = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in stats.as_dict().items()}
    assert FeatureStatistics.from_dict(stored).count == 9  # numpy arrays, as read back from Parquet
    with pytest.raises(ValueError, match="shard 3: missing field\\(s\\) outer"):
        FeatureStatistics.from_dict({"count": 1, "sum": [0.0]}, "shard 3")
    with pytest.raises(ValueError, match="'count' must be a non-negative integer"):
        FeatureStatistics.from_dict({**stats.as_dict(), "count": -1})
    with pytest.raises(ValueError, match="'outer' \\[D, D\\]"):
        FeatureStatistics.from_dict({**stats.as_dict(), "outer": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="4-d and 5-d"):
        stats + FeatureStatistics.zeros(5)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStatistics.of(torch.zeros(1, 4)).covariance()
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([np.nan, 0.0]), np.eye(2))
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
