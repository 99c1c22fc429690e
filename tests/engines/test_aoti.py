"""AOTInductor engines: compiled once (here on the CPU), gated, cached, then loaded without compiling."""

import json
import time

import pytest
import torch

import engines.aoti as aoti
from engines import load_inverter
from engines.cache import EngineCache
from engines.engine import EngineOptions, build_engine
from factories import images, make_e2style, write_official


@pytest.mark.slow
def test_an_aoti_engine_is_compiled_once_gated_and_loaded_from_the_cache(tmp_path, monkeypatch):
    checkpoint = str(write_official(make_e2style(stages=1, seed=9), tmp_path / "e2style.pt"))
    options = EngineOptions(backend="aoti", max_batch=4, cache_uri=str(tmp_path / "cache"))
    started = time.perf_counter()
    engine = build_engine(checkpoint, options)
    compiled_in = time.perf_counter() - started
    assert engine.gate_report.passed and "aoti float32 passed the accuracy gate" in engine.gate_report.describe()
    x = images(6, 3, 32, seed=3)  # more than max_batch: run in pieces of 4 and 2
    reference = load_inverter(checkpoint)
    codes = engine.invert(x)
    torch.testing.assert_close(codes, reference.invert(x), rtol=0, atol=2e-5)
    torch.testing.assert_close(engine.synthesize(codes), reference.synthesize(codes), rtol=0, atol=2e-5)
    fs = EngineCache(options.cache_uri).fs
    kinds = sorted(json.loads(fs.cat(path))["fields"]["kind"] for path in fs.glob(f"{tmp_path}/cache/*.json"))
    assert kinds == ["aoti", "aoti", "gate"]  # stage1, synthesis and the gate's verdict

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again although the cache holds the packages")

    monkeypatch.setattr(aoti, "compile_package", no_compiling)
    started = time.perf_counter()
    again = build_engine(checkpoint, options, gate=False)  # as an actor loads it
    assert time.perf_counter() - started < compiled_in / 3
    torch.testing.assert_close(again.invert(x), codes, rtol=0, atol=0)


@pytest.mark.slow
def test_a_package_of_batch_one_runs_a_batch_of_one():
    # torch.export's batch Dim needs min < max: a package for max_batch 1 still exports 1..2. A small
    # module is enough for that (the engine's own graphs compile in the test above).
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 8 * 8, 5)).eval()
    graph = aoti._Autocast(module, "cpu", None)  # as the engine wraps its graphs: inputs as varargs
    package = aoti.load_package(aoti.compile_package(graph, {"x": torch.randn(2, 3, 8, 8)}, max_batch=1))
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(package(x), module(x), rtol=0, atol=1e-5)
