"""Ahead-of-time compiled engines: each graph exported with ``torch.export`` (dynamic batch) and compiled by
AOTInductor into a package (a shared library with its weights), built once, gated, and stored in the
engine cache, so that every actor loads the compiled artefact in milliseconds instead of compiling on
start, the role TensorRT plans play where TensorRT is installed.

Reduced precision is compiled in: the graph runs under autocast inside the exported module, so the same
mixed-precision rules as the eager engine apply, and inputs and outputs stay float32. A package is only
valid for the device kind, GPU model, torch version, precision, batch range and weights it was built
with, and all of them are in its cache key.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from engines.backends import AUTOCAST_DTYPES, module_digest
from engines.cache import EngineCache, device_identity
from engines.graphs import FUSED_FORMS, model_graphs
from engines.runners import Runner
from operators.e2style import E2Style

if TYPE_CHECKING:
    from engines.engine import EngineOptions

# Bumped when what is exported or how it is compiled changes, so older packages are misses.
PACKAGE_VERSION = 1


class _Autocast(nn.Module):
    """A graph run under autocast to ``dtype``, taking and giving float32."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype | None):
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.dtype is None:
            return self.module(*inputs)
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(*inputs).float()


def compile_package(module: nn.Module, inputs: dict[str, torch.Tensor], max_batch: int) -> bytes:
    """The AOTInductor package of ``module`` for batches 1..max_batch (``inputs``: a batch of 2, as export
    would fix a batch axis of size 1)."""
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))  # a Dim needs min < max
    with torch.no_grad():
        # One spec per argument: the wrapper takes the graph's inputs as varargs, a tuple of them.
        program = torch.export.export(module, tuple(inputs.values()), dynamic_shapes=(tuple({0: batch} for _ in inputs),))
    with tempfile.TemporaryDirectory() as folder:
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(Path(folder) / "graph.pt2"))
        return Path(path).read_bytes()


def load_package(data: bytes) -> Runner:
    """A runner over a package's bytes. The file stays for the life of the process: the loader reads it lazily."""
    path = Path(tempfile.mkdtemp(prefix="e2style-aoti-")) / "graph.pt2"
    path.write_bytes(data)
    return torch._inductor.aoti_load_package(str(path))


def aoti_runners(model: E2Style, stages: int, options: "EngineOptions", device: torch.device) -> dict[str, Runner]:
    cache = EngineCache(options.cache_uri, options.cache_storage_options) if options.cache_uri else None
    dtype = AUTOCAST_DTYPES[options.precision]
    form = options.modulation
    runners = {}
    for name, graph in model_graphs(model, stages, True, form, dtype or torch.float32, options.channels_last):
        digest = module_digest(graph)  # of the weights as the graph holds them, before the copy moves anywhere
        # A fused generator holds its weights in the engine's dtype already: no autocast around it.
        fused = name == "synthesis" and form in FUSED_FORMS
        module = _Autocast(graph.to(device), device.type, None if fused else dtype).eval()
        inputs = {k: v.to(device) for k, v in graph.example_inputs(2).items()}

        def build(module=module, inputs=inputs) -> bytes:
            return compile_package(module, inputs, options.max_batch)

        fields = {
            "kind": "aoti",
            "graph": name,
            "output": graph.output_name,
            "weights_sha256": digest,
            "package_version": PACKAGE_VERSION,
            "torch": torch.__version__,
            **device_identity(device),
            "precision": options.precision,
            "form": form if name == "synthesis" else None,
            "max_batch": options.max_batch,
        }
        data = build() if cache is None else cache.get_or_build(fields, build).data
        runners[name] = _runner(load_package(data), device)
    return runners


def _runner(package, device: torch.device) -> Runner:
    def run(**inputs: torch.Tensor) -> torch.Tensor:
        args = [t.to(device, torch.float32).contiguous() for t in inputs.values()]
        with torch.inference_mode():
            return package(*args).float()

    return run
