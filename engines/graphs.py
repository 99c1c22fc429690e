"""The E2Style model cut into the graphs that engines run, and their export to ONNX with a dynamic batch.

    first stage     images [B, C, S, S]                    -> W+ [B, num_ws, style_dim]  (latent_avg added)
    refine stage k  images [B, C, S, S], recon [B, 3, S, S] -> W+ residual
    synthesis       W+ [B, num_ws, style_dim]              -> reconstruction [B, 3, S, S] (pooled, raw)

Multi-stage inversion runs them in the official order (``engines.runners.invert_stages``), passing each
graph its inputs by the names it declares. For export, the encoder heads pool with ``MatrixAvgPool2d``
and the generator uses the ``batched`` modulated convolution: the same numbers as the eager operators
in float32, in graphs whose shapes do not depend on the batch.

The synthesis graph computes the generator in one of ``GENERATOR_FORMS``: the modulation forms of
``operators.stylegan2.layers`` on the model's own module tree, or ``fused`` / ``fused-folded``, the
generator prepared once for inference (``operators.stylegan2.fused``: weights cast once to the engine's
dtype, channels-last, fused epilogue, pooled last layer; the second also folds the upsampling blur).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from operators.e2style import E2Style, E2StyleEncoder
from operators.images import box_downsample
from operators.stylegan2 import MODULATION_FORMS, Generator
from operators.stylegan2.fused import FusedSynthesis

OPSET = 18
FUSED_FORMS = ("fused", "fused-folded")
GENERATOR_FORMS: tuple[str, ...] = (*MODULATION_FORMS, *FUSED_FORMS)


class Graph(nn.Module):
    """A graph engines run. Besides ``forward`` it declares its inputs' names (``forward``'s arguments, in
    order) and its output's name, which exported graphs and runners use, and makes seeded inputs of a
    batch to export or compile it with."""

    input_names: tuple[str, ...]
    output_name: str

    def example_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _images(generator: torch.Generator, batch: int, channels: int, size: int) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


class FirstStage(Graph):
    input_names = ("images",)
    output_name = "codes"

    def __init__(self, encoder: E2StyleEncoder, latent_avg: torch.Tensor | None, image_size: int):
        super().__init__()
        self.encoder = encoder
        self.image_size = image_size
        self.register_buffer("latent_avg", None if latent_avg is None else latent_avg.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        codes = self.encoder(images)
        return codes if self.latent_avg is None else codes + self.latent_avg

    def example_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        return {"images": _images(_seeded(), batch, self.encoder.in_channels, self.image_size)}


class RefineStage(Graph):
    input_names = ("images", "reconstruction")
    output_name = "codes"

    def __init__(self, encoder: E2StyleEncoder, image_size: int):
        super().__init__()
        self.encoder = encoder
        self.image_size = image_size

    def forward(self, images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        return self.encoder(torch.cat((images, reconstruction), dim=1))

    def example_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        generator = _seeded()
        images = _images(generator, batch, self.encoder.in_channels - 3, self.image_size)
        return {"images": images, "reconstruction": _images(generator, batch, 3, self.image_size)}


class _SynthesisGraph(Graph):
    input_names = ("codes",)
    output_name = "reconstruction"
    num_ws: int
    style_dim: int

    def example_inputs(self, batch: int) -> dict[str, torch.Tensor]:
        return {"codes": torch.randn(batch, self.num_ws, self.style_dim, generator=_seeded())}


class Synthesis(_SynthesisGraph):
    def __init__(self, generator: Generator, image_size: int):
        super().__init__()
        self.generator = generator
        self.image_size = image_size
        self.num_ws, self.style_dim = generator.config.num_ws, generator.config.style_dim

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return box_downsample(self.generator(codes, noise_mode="stored"), self.image_size)


class FusedSynthesisGraph(_SynthesisGraph, FusedSynthesis):
    """The fused generator as a graph: ``FusedSynthesis`` keeps its own ``num_ws`` and ``style_dim``."""


@dataclasses.dataclass
class Graphs:
    """The model's graphs by name: "stage1", "stage2", ..., "synthesis"."""

    modules: dict[str, Graph]

    def __iter__(self) -> Iterator[tuple[str, Graph]]:
        return iter(self.modules.items())


def model_graphs(
    model: E2Style,
    stages: int,
    exportable: bool,
    form: str | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = True,
) -> Graphs:
    """The graphs of ``stages`` stages (and the generator); ``exportable`` makes export-friendly copies of
    the encoders (and computes a ``grouped`` or unnamed generator ``batched``: the grouped convolution's
    graph depends on the batch). ``form`` (one of ``GENERATOR_FORMS``) computes the generator that way (a
    copy when it is not the model's own); a fused generator holds its weights in ``dtype``, channels-last
    with ``channels_last``."""
    cfg = model.config
    if form is not None and form not in GENERATOR_FORMS:
        raise ValueError(f"unknown generator form {form!r}; known: {', '.join(GENERATOR_FORMS)}")
    encoders = [model.encoder_firststage, *model.encoder_refinestage_list[: stages - 1]]
    if exportable:
        encoders = [copy.deepcopy(e) for e in encoders]
        for encoder in encoders:
            encoder.use_matrix_pooling(cfg.image_size)
        if form in (None, "grouped"):
            form = "batched"
    modules: dict[str, Graph] = {"stage1": FirstStage(encoders[0], model.latent_avg, cfg.image_size)}
    for k, encoder in enumerate(encoders[1:], start=2):
        modules[f"stage{k}"] = RefineStage(encoder, cfg.image_size)
    modules["synthesis"] = synthesis_graph(model.decoder, cfg.image_size, form, dtype, channels_last)
    return Graphs({name: m.eval() for name, m in modules.items()})


def synthesis_graph(
    generator: Generator, image_size: int, form: str | None, dtype: torch.dtype, channels_last: bool
) -> _SynthesisGraph:
    if form in FUSED_FORMS:
        return FusedSynthesisGraph(generator, image_size, dtype, channels_last, fold_blur=form == "fused-folded")
    if form is not None and form != generator.config.modulation:
        other = Generator(dataclasses.replace(generator.config, modulation=form))
        other.load_state_dict(generator.state_dict())
        generator = other.to(generator.input.input.device)
    return Synthesis(generator, image_size)


def export_onnx(graph: Graph, max_batch: int) -> bytes:
    """ONNX bytes of ``graph`` with a dynamic batch axis (1..max_batch) on every input and the output."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    inputs = graph.example_inputs(min(2, max_batch))
    with torch.no_grad():
        program = torch.onnx.export(
            graph,
            tuple(inputs.values()),
            input_names=list(graph.input_names),
            output_names=[graph.output_name],
            dynamic_shapes={name: {0: batch} for name in graph.input_names},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "graph.onnx"
        program.save(str(path), external_data=False)  # weights inline: the models are far below 2 GiB
        return path.read_bytes()
