"""Reading checkpoint files: official E2Style files and rosinality StyleGAN2 files, from any fsspec URL.

Files are unpickled with ``weights_only=True`` only. The architecture of a file is recognised by
comparing every key and shape with the registered presets (or a config the caller gives); nothing is
loaded unless the whole file matches, and a mismatch lists the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import numbers
import pickle
import re
from dataclasses import dataclass
from typing import Any, Mapping

import fsspec
import torch
from torch import nn

from operators.e2style import E2Style, E2StyleConfig
from operators.presets import get_preset, preset_names
from operators.stylegan2 import Generator, GeneratorConfig

E2STYLE = "e2style"
STYLEGAN2 = "stylegan2"
_REFINE_KEY = re.compile(r"^encoder_refinestage_list\.(\d+)\.")
_LIST_LIMIT = 8  # keys shown per category in a mismatch message


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as asked. The message names the file."""


@dataclass(frozen=True)
class CheckpointInfo:
    uri: str
    kind: str  # "e2style" or "stylegan2"
    preset: str | None  # the registered architecture the file matched, None for a caller's config
    stages_stored: int  # encoder stages in the file (0 for a bare generator)
    task: str | None  # the official ``dataset_type`` (ffhq_encode, ffhq_colorization, ...) if recorded
    opts: Mapping[str, Any]  # the training options stored in the file ({} if none)


def read_checkpoint(uri: str, storage_options: Mapping[str, Any] | None = None, digest=None) -> Any:
    """Unpickle a torch file from any fsspec URL onto the CPU, tensors and primitives only. With ``digest``
    (a hashlib object) the file's bytes also go through it: one read for both (holding the bytes while
    they are unpickled), where hashing apart would fetch the file twice."""
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            if digest is not None:
                data = f.read()
                digest.update(data)
                f = io.BytesIO(data)
            # argparse.Namespace is a plain attribute bag; rosinality training files store one as 'args'.
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri} does not exist") from None
    except pickle.UnpicklingError as e:
        # torch's message advises turning weights_only off; only its diagnosis is worth passing on.
        text = str(e)
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].split(". ")[0].strip()
        if "Unsupported global" in text:
            raise CheckpointError(
                f"checkpoint {uri} holds Python objects that are not loaded for safety "
                f"(torch.load with weights_only=True): {reason}"
            ) from e
        raise CheckpointError(f"checkpoint {uri} is not a readable PyTorch file: {reason or type(e).__name__}") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"checkpoint {uri} is not a readable PyTorch file: {e}") from e


def write_checkpoint(ckpt: Mapping[str, Any], uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Save a checkpoint dict to any fsspec URL. It appears under its name only once fully written."""
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    partial = f"{path}.partial"
    fs.makedirs(fs._parent(path), exist_ok=True)
    with fs.open(partial, "wb") as f:
        torch.save(dict(ckpt), f)
    fs.mv(partial, path)


def checkpoint_kind(obj: Any) -> str | None:
    if isinstance(obj, Mapping):
        state = obj.get("state_dict")
        if isinstance(state, Mapping) and any(str(k).startswith("encoder_firststage.") for k in state):
            return E2STYLE
        if isinstance(obj.get("g_ema"), Mapping):
            return STYLEGAN2
    return None


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = sorted(map(str, obj))
        shown = ", ".join(keys[:_LIST_LIMIT]) + (", ..." if len(keys) > _LIST_LIMIT else "")
        text = f"a dict with top-level keys [{shown}]"
        if isinstance(obj.get("state_dict"), Mapping):
            text += " whose state_dict has no encoder_firststage.* keys (pSp and e4e files are not E2Style files)"
        return text
    return f"a {type(obj).__name__}"


def _require_kind(obj: Any, uri: str, wanted: tuple[str, ...]) -> str:
    kind = checkpoint_kind(obj)
    if kind in wanted:
        return kind
    names = {E2STYLE: "an E2Style checkpoint (state_dict, opts, latent_avg)", STYLEGAN2: "a StyleGAN2 checkpoint (g_ema)"}
    found = names[kind] if kind else _describe(obj)
    raise CheckpointError(f"checkpoint {uri} is {found}; expected {' or '.join(names[w] for w in wanted)}")


def _signature(module: nn.Module) -> dict[str, tuple[tuple[int, ...], bool]]:
    return {k: (tuple(v.shape), v.is_floating_point()) for k, v in module.state_dict().items()}


def _mismatch(expected: Mapping[str, tuple], state: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        (k, tuple(state[k].shape), expected[k][0])
        for k in expected
        if k in state
        and (tuple(state[k].shape) != expected[k][0] or state[k].is_floating_point() != expected[k][1])
    ]
    return missing, unexpected, misshaped


def _format_mismatch(missing: list, unexpected: list, misshaped: list) -> str:
    def listing(items: list[str]) -> str:
        more = f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
        return ", ".join(items[:_LIST_LIMIT]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {listing(unexpected)}")
    if misshaped:
        parts.append(
            f"{len(misshaped)} mis-shaped key(s): "
            + listing([f"{k} is {list(got)} in the file, {list(want)} in the model" for k, got, want in misshaped])
        )
    return "; ".join(parts)


def _build_on_meta(factory, config):
    # Meta tensors cost no memory or init time; load_state_dict(assign=True) then adopts the file's tensors.
    with torch.device("meta"):
        return factory(config)


def _match_architecture(
    uri: str,
    state: Mapping[str, torch.Tensor],
    candidates: list[tuple[str | None, Any]],
    factory,
    what: str,
) -> tuple[str | None, Any]:
    """The (name, config) of the first candidate whose state_dict has exactly the file's keys and shapes."""
    best = None
    for name, config in candidates:
        problems = _mismatch(_signature(_build_on_meta(factory, config)), state)
        if not any(problems):
            return name, config
        count = sum(map(len, problems))
        if best is None or count < best[0]:
            best = (count, name, problems)
    _, name, problems = best
    against = f"the {name!r} preset" if name else "the given config"
    known = "" if candidates[0][0] is None else f" (known presets: {', '.join(n for n, _ in candidates)})"
    raise CheckpointError(
        f"checkpoint {uri} does not match {what} of any known architecture{known}; "
        f"closest is {against}: {_format_mismatch(*problems)}"
    )


def _float32_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors as float32 (half-precision copies of a model load losslessly); others as they are."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _stored_stages(state: Mapping[str, Any], uri: str) -> int:
    """The first stage plus the refinement encoders ``encoder_refinestage_list.{0..n-1}`` in a state_dict."""
    indices = {int(m.group(1)) for k in state if (m := _REFINE_KEY.match(str(k)))}
    if indices != set(range(len(indices))):
        raise CheckpointError(
            f"checkpoint {uri}: refinement encoders {sorted(indices)} are not numbered 0..{len(indices) - 1}"
        )
    return len(indices) + 1


def load_e2style(
    uri: str,
    stages: int | None = None,
    config: E2StyleConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
    digest=None,
) -> tuple[E2Style, CheckpointInfo]:
    """An official-format E2Style file -> (model on the CPU in eval mode with ``stages`` stages, info).

    ``stages`` defaults to every stage the file holds. ``config`` overrides architecture recognition;
    its ``stages``, ``input_channels`` and ``start_from_latent_avg`` are taken from the file. ``digest``
    (a hashlib object) also hashes the file's bytes in the same read.
    """
    ckpt = read_checkpoint(uri, storage_options, digest)
    _require_kind(ckpt, uri, (E2STYLE,))
    opts = ckpt.get("opts") or {}
    if not isinstance(opts, Mapping):
        raise CheckpointError(f"checkpoint {uri}: 'opts' should be a dict of training options, got {type(opts).__name__}")
    state = dict(ckpt["state_dict"])
    stored = _stored_stages(state, uri)
    recorded = opts.get("training_stage", stored)
    if recorded != stored:
        raise CheckpointError(
            f"checkpoint {uri}: opts['training_stage'] is {recorded} but the state_dict holds {stored} stage(s)"
        )
    if stages is None:
        stages = stored
    if not isinstance(stages, numbers.Integral) or isinstance(stages, bool) or not 1 <= stages <= stored:
        raise CheckpointError(f"checkpoint {uri} holds {stored} stage(s) (opts['training_stage']); asked for {stages!r}")
    stages = int(stages)
    if opts.get("learn_in_w"):
        raise CheckpointError(f"checkpoint {uri} was trained with learn_in_w, which E2Style's 18-code encoder does not support")

    first_conv = state.get("encoder_firststage.input_layer.0.weight")
    input_channels = opts.get("input_nc", first_conv.shape[1] if first_conv is not None else 3)
    use_avg = bool(opts.get("start_from_latent_avg", ckpt.get("latent_avg") is not None))
    if use_avg:
        if not isinstance(ckpt.get("latent_avg"), torch.Tensor):
            raise CheckpointError(f"checkpoint {uri}: opts['start_from_latent_avg'] is set but the file has no 'latent_avg' tensor")
        state["latent_avg"] = ckpt["latent_avg"]

    file_arch = dict(stages=stored, input_channels=input_channels, start_from_latent_avg=use_avg)
    bases = [(None, config)] if config is not None else [(n, get_preset(n)) for n in preset_names()]
    try:
        candidates = [(name, dataclasses.replace(base, **file_arch)) for name, base in bases]
    except ValueError as e:
        raise CheckpointError(f"checkpoint {uri}: {e}") from None
    name, full_config = _match_architecture(uri, state, candidates, E2Style, "an E2Style model")

    # Only the requested stages are loaded; later refinement encoders stay in the file.
    wanted = {k: v for k, v in state.items() if not ((m := _REFINE_KEY.match(k)) and int(m.group(1)) >= stages - 1)}
    model = _build_on_meta(E2Style, dataclasses.replace(full_config, stages=stages))
    model.load_state_dict(_float32_state(wanted), strict=True, assign=True)
    info = CheckpointInfo(uri, E2STYLE, name, stored, opts.get("dataset_type"), dict(opts))
    return model.eval(), info


def load_stylegan2(
    uri: str,
    config: GeneratorConfig | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[Generator, torch.Tensor | None, CheckpointInfo]:
    """A generator from a rosinality file (``g_ema``) or the decoder of an E2Style file.

    Returns (generator on the CPU in eval mode, the file's mean W+ code [num_ws, style_dim] or None, info).
    """
    ckpt = read_checkpoint(uri, storage_options)
    kind = _require_kind(ckpt, uri, (STYLEGAN2, E2STYLE))
    if kind == STYLEGAN2:
        state = dict(ckpt["g_ema"])
        latent_avg = ckpt.get("latent_avg")
        opts: Mapping[str, Any] = {}
    else:
        prefix = "decoder."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        opts = ckpt.get("opts") or {}
        latent_avg = ckpt.get("latent_avg") if opts.get("start_from_latent_avg", True) else None
    if config is not None:
        candidates = [(None, config)]
    else:
        candidates = []
        for name in preset_names():
            generator_config = get_preset(name).generator
            if all(generator_config != c for _, c in candidates):
                candidates.append((name, generator_config))
    name, config = _match_architecture(uri, state, candidates, Generator, "a StyleGAN2 generator")
    model = _build_on_meta(Generator, config)
    model.load_state_dict(_float32_state(state), strict=True, assign=True)

    if latent_avg is not None:
        latent_avg = latent_avg.float()
        if latent_avg.shape == (config.style_dim,):
            latent_avg = latent_avg.expand(config.num_ws, -1).clone()
        elif latent_avg.shape != (config.num_ws, config.style_dim):
            raise CheckpointError(
                f"checkpoint {uri}: latent_avg has shape {list(latent_avg.shape)}, expected "
                f"[{config.style_dim}] or [{config.num_ws}, {config.style_dim}]"
            )
    stages = 0 if kind == STYLEGAN2 else _stored_stages(ckpt["state_dict"], uri)
    info = CheckpointInfo(uri, kind, name, stages, opts.get("dataset_type"), dict(opts))
    return model.eval(), latent_avg, info


def official_checkpoint(model: E2Style, task: str = "ffhq_encode", **opts: Any) -> dict[str, Any]:
    """The dict that the official training code saves for ``model``: state_dict, opts and latent_avg.

    Used to write E2Style files (tests, the bundled sample, models converted from elsewhere) that the
    official scripts and ``load_e2style`` both read. Extra keyword arguments are added to ``opts``.
    """
    cfg = model.config
    state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k != "latent_avg"}
    record = {
        "dataset_type": task,
        "training_stage": cfg.stages,
        "is_training": True,
        "input_nc": cfg.input_channels,
        "label_nc": 0 if cfg.input_channels == 3 else cfg.input_channels,
        "start_from_latent_avg": cfg.start_from_latent_avg,
        "learn_in_w": False,
        "train_decoder": False,
        "resize_factors": None,
        "device": "cuda:0",
    }
    record.update(opts)
    ckpt: dict[str, Any] = {"state_dict": state, "opts": record}
    if model.latent_avg is not None:
        ckpt["latent_avg"] = model.latent_avg.detach().cpu().clone()
    return ckpt


def checkpoint_sha256(uri: str, storage_options: Mapping[str, Any] | None = None, chunk: int = 1 << 24) -> str:
    """sha256 of a checkpoint file's bytes, streamed (the provenance of everything computed with it)."""
    digest = hashlib.sha256()
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            while block := f.read(chunk):
                digest.update(block)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri} does not exist") from None
    return digest.hexdigest()
