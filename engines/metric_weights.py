"""The metric networks' weights: read from published files, never downloaded.

Which files load (spec field: files):

- ``metrics.lpips.weights``: torchvision's ImageNet trunk and the LPIPS v0.1 linear heads, either as two
  files ``[trunk, heads]`` or as one file holding both sets of keys. The trunk is
  ``alexnet-owt-7be5be79.pth`` (AlexNet, the LPIPS of pSp and E2Style) or ``vgg16-397923af.pth``
  (VGG16); the heads are ``lpips/weights/v0.1/alex.pth`` or ``vgg.pth`` from the LPIPS repository
  (richzhang/PerceptualSimilarity, also shipped in the ``lpips`` package and as E2Style's
  ``pretrained_models/alex.pth``). The network is recognised from the trunk's first convolution. One
  combined file is ``torch.save({**torch.load(trunk), **torch.load(heads)}, path)``.
- ``metrics.identity.weights``: TreB1eN's IR-SE50 ArcFace ``model_ir_se50.pth``, the file pSp and
  E2Style train with.
- ``metrics.fid.weights``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``.

Each file is read from a path or fsspec URL with ``torch.load(weights_only=True)``, in one read that also
hashes it, and checked key by key against the network: a missing, unexpected or mis-shaped key is
refused, naming the file, the key and both shapes. Two kinds of key are tolerated: the classifier
layers the published trunk files carry but a metric never runs (torchvision's ``classifier.*``,
pytorch-fid's 1008-class ``fc.*``), which must still have their published shapes and are not loaded;
and batch norm ``num_batches_tracked`` counters, which files saved before PyTorch 0.4.1 lack and which
evaluation never reads. Half-precision files load as float32.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from engines.checkpoints import CheckpointError, checkpoint_sha256, read_checkpoint, write_checkpoint
from operators.metric_nets import LPIPS, ArcFaceIRSE50, FIDInceptionV3

LPIPS_METRIC, IDENTITY_METRIC, FID_METRIC = "lpips", "identity", "fid"
METRICS = (LPIPS_METRIC, IDENTITY_METRIC, FID_METRIC)
LPIPS_NETS = ("alex", "vgg")
_LIST_LIMIT = 8  # problems shown in a mismatch message

# Keys of the published files that no metric runs, with the shapes those files give them.
_UNUSED_KEYS: dict[str, dict[str, tuple[int, ...]]] = {
    "lpips-alex": {
        "classifier.1.weight": (4096, 9216),
        "classifier.1.bias": (4096,),
        "classifier.4.weight": (4096, 4096),
        "classifier.4.bias": (4096,),
        "classifier.6.weight": (1000, 4096),
        "classifier.6.bias": (1000,),
    },
    "lpips-vgg": {
        "classifier.0.weight": (4096, 25088),
        "classifier.0.bias": (4096,),
        "classifier.3.weight": (4096, 4096),
        "classifier.3.bias": (4096,),
        "classifier.6.weight": (1000, 4096),
        "classifier.6.bias": (1000,),
    },
    "arcface-ir-se50": {},
    "inception-v3-fid": {"fc.weight": (1008, 2048), "fc.bias": (1008,)},
}
_LABELS = {
    "lpips-alex": "LPIPS (AlexNet)",
    "lpips-vgg": "LPIPS (VGG16)",
    "arcface-ir-se50": "identity (ArcFace IR-SE50)",
    "inception-v3-fid": "FID (Inception-v3)",
}


class MetricWeightsError(CheckpointError):
    """Metric network weights that cannot be used. The message names the file and, for a mismatch, the key."""


@dataclass(frozen=True)
class WeightFile:
    uri: str
    sha256: str


@dataclass(frozen=True)
class MetricNet:
    """A metric network with its weights: on the CPU, in eval mode, without gradients."""

    metric: str  # "lpips", "identity" or "fid"
    network: str  # "lpips-alex", "lpips-vgg", "arcface-ir-se50" or "inception-v3-fid"
    module: nn.Module
    files: tuple[WeightFile, ...]

    @property
    def sha256(self) -> str:
        """The weight file's sha256; for an LPIPS trunk and heads given apart, both digests joined by '+'."""
        return "+".join(f.sha256 for f in self.files)

    def provenance(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "network": self.network,
            "files": [{"uri": f.uri, "sha256": f.sha256} for f in self.files],
        }


def _network(metric: str, net: str | None) -> str:
    if metric == LPIPS_METRIC:
        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
        return f"lpips-{net}"
    return {IDENTITY_METRIC: "arcface-ir-se50", FID_METRIC: "inception-v3-fid"}[metric]


def _build(network: str) -> nn.Module:
    if network.startswith("lpips-"):
        return LPIPS(network.removeprefix("lpips-"))
    return ArcFaceIRSE50() if network == "arcface-ir-se50" else FIDInceptionV3()


def _build_on_meta(network: str) -> nn.Module:
    # Meta tensors cost no memory or init time; load_state_dict(assign=True) then adopts the file's tensors.
    # Every tensor of these networks is in their state_dict, so none is left on the meta device.
    with torch.device("meta"):
        return _build(network)


def _read_state(uri: str, storage_options: Mapping[str, Any] | None, what: str) -> tuple[dict[str, torch.Tensor], str]:
    """A file's flat {key: tensor} and the sha256 of its bytes."""
    digest = hashlib.sha256()
    try:
        obj = read_checkpoint(uri, storage_options, digest)
    except CheckpointError as e:
        raise MetricWeightsError(f"{what} weights: {e}") from None
    if not isinstance(obj, Mapping):
        raise MetricWeightsError(
            f"{what} weights {uri} hold a {type(obj).__name__}, not a state_dict (a dict of tensors)"
        )
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise MetricWeightsError(
                f"{what} weights {uri}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "expected a state_dict (a flat dict of tensors)"
            )
    return dict(obj), digest.hexdigest()


def _listing(items: list[str]) -> str:
    more = f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
    return ", ".join(items[:_LIST_LIMIT]) + more


def _describe(tensor: torch.Tensor) -> str:
    return f"{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def verified_state(
    network: str, module: nn.Module, sources: Sequence[tuple[str, Mapping[str, torch.Tensor]]]
) -> dict[str, torch.Tensor]:
    """The state_dict to load into ``module`` from the (uri, {key: tensor}) of its files, checked key by key."""
    expected = module.state_dict()
    unused = _UNUSED_KEYS[network]
    found: dict[str, tuple[str, torch.Tensor]] = {}
    duplicated, unexpected, misshaped = [], [], []
    for uri, state in sources:
        for key, tensor in state.items():
            if key in found:
                duplicated.append(f"{key} (in {found[key][0]} and {uri})")
                continue
            found[key] = (uri, tensor)
            want = expected.get(key)
            if want is None and key not in unused:
                unexpected.append(f"{key} (in {uri})")
            elif want is None:
                if tuple(tensor.shape) != unused[key]:
                    published = list(unused[key])
                    misshaped.append(f"{key} is {list(tensor.shape)} in {uri}, {published} in the published file")
            elif tensor.shape != want.shape or tensor.is_floating_point() != want.is_floating_point():
                misshaped.append(f"{key} is {_describe(tensor)} in {uri}, {_describe(want)} in the network")
    missing = [k for k in expected if k not in found and not k.endswith(".num_batches_tracked")]
    categories = {"missing": missing, "unexpected": unexpected, "mis-shaped": misshaped, "repeated": duplicated}
    problems = [f"{len(items)} {name} key(s): {_listing(items)}" for name, items in categories.items() if items]
    if problems:
        files = ", ".join(uri for uri, _ in sources)
        raise MetricWeightsError(f"{_LABELS[network]} weights {files} do not match the network: {'; '.join(problems)}")
    loaded = {}
    for key in expected:
        tensor = found[key][1] if key in found else torch.tensor(0)  # an absent counter starts at 0
        loaded[key] = tensor.float() if tensor.is_floating_point() else tensor
    return loaded


def _lpips_net(sources: Sequence[tuple[str, Mapping[str, torch.Tensor]]], net: str | None) -> str:
    """The LPIPS trunk ("alex" or "vgg") the files hold, from the shape of the first convolution."""
    files = ", ".join(uri for uri, _ in sources)
    first = next((state["features.0.weight"] for _, state in sources if "features.0.weight" in state), None)
    if first is None:
        heads_only = any(key.startswith("lin") for _, state in sources for key in state)
        raise MetricWeightsError(
            f"LPIPS weights {files} hold no trunk (no features.0.weight)"
            + ("; these are the linear heads alone" if heads_only else "")
            + ": give torchvision's AlexNet or VGG16 file with the LPIPS heads, "
            "e.g. [alexnet-owt-7be5be79.pth, alex.pth]"
        )
    found = {(64, 3, 11, 11): "alex", (64, 3, 3, 3): "vgg"}.get(tuple(first.shape))
    if found is None:
        raise MetricWeightsError(
            f"LPIPS weights {files}: features.0.weight is {list(first.shape)}, neither AlexNet's "
            "[64, 3, 11, 11] nor VGG16's [64, 3, 3, 3]"
        )
    if net is not None and net != found:
        raise MetricWeightsError(f"LPIPS weights {files} hold the {found!r} trunk, but net {net!r} was asked for")
    return found


def load_metric_net(
    metric: str,
    weights: str | Sequence[str],
    storage_options: Mapping[str, Any] | None = None,
    net: str | None = None,
) -> MetricNet:
    """The network of ``metric`` ("lpips", "identity" or "fid") with the weights of ``weights``: one path or
    fsspec URL, or for LPIPS also [trunk, heads]. ``net`` ("alex" or "vgg") checks the LPIPS trunk; by
    default it is recognised from the file."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    uris = [weights] if isinstance(weights, str) else list(weights)
    most = 2 if metric == LPIPS_METRIC else 1
    if not 1 <= len(uris) <= most or not all(isinstance(u, str) and u for u in uris):
        shapes = "a path, or [trunk, heads]" if metric == LPIPS_METRIC else "one path"
        raise ValueError(f"{metric} weights must be {shapes}, got {weights!r}")
    if net is not None and net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net must be one of {LPIPS_NETS}, got {net!r}")
    what = {LPIPS_METRIC: "LPIPS", IDENTITY_METRIC: "identity", FID_METRIC: "FID"}[metric]
    read = [(uri, *_read_state(uri, storage_options, what)) for uri in uris]
    sources = [(uri, state) for uri, state, _ in read]
    network = _network(metric, _lpips_net(sources, net) if metric == LPIPS_METRIC else None)
    module = _build_on_meta(network)
    module.load_state_dict(verified_state(network, module, sources), strict=True, assign=True)
    module.eval().requires_grad_(False)
    return MetricNet(metric, network, module, tuple(WeightFile(uri, sha) for uri, _, sha in read))


def random_metric_weights(metric: str, seed: int = 0, net: str = "alex") -> dict[str, torch.Tensor]:
    """Seeded, untrained weights for a metric network, keyed as its published file (LPIPS: trunk and heads
    in one dict; the classifier layers no metric runs are left out).

    Scales keep activations alive through the depth, so the networks' outputs vary with their input
    as trained ones do: He-normal convolutions and linear layers, batch norms near the identity,
    non-negative LPIPS heads (LPIPS trains them clamped at 0).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    module = _build(_network(metric, net if metric == LPIPS_METRIC else None))
    g = torch.Generator().manual_seed(seed)

    def normal(like: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(like.shape, generator=g) * std

    with torch.no_grad():
        for name, layer in module.named_modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                weight = normal(layer.weight, math.sqrt(2 / layer.weight[0].numel()))
                layer.weight.copy_(weight.abs() if name.startswith("lin") else weight)
                if layer.bias is not None:
                    layer.bias.copy_(normal(layer.bias, 0.01))
            elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.weight.copy_(1 + normal(layer.weight, 0.1))
                layer.bias.copy_(normal(layer.bias, 0.1))
                layer.running_mean.copy_(normal(layer.running_mean, 0.1))
                layer.running_var.copy_(1 + normal(layer.running_var, 0.1).abs())
            elif isinstance(layer, nn.PReLU):
                layer.weight.copy_(0.25 + normal(layer.weight, 0.05))
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def write_random_metric_weights(
    metric: str, uri: str, seed: int = 0, net: str = "alex", storage_options: Mapping[str, Any] | None = None
) -> str:
    """Write ``random_metric_weights`` to a path or fsspec URL (complete or not at all); returns its sha256."""
    write_checkpoint(random_metric_weights(metric, seed, net), uri, storage_options)
    return checkpoint_sha256(uri, storage_options)
