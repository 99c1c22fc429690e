import json
import logging

import pytest
import torch

import engines.backends as backends
import engines.engine as engine_module
from engines import load_inverter
from engines.cache import EngineCache, cache_key
from engines.engine import EngineOptions, build_engine
from engines.gate import AccuracyGateFailed, GateThresholds, psnr_db
from factories import images, make_e2style, write_official
from operators.stylegan2.fused import FusedSynthesis


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_official(make_e2style(stages=2, seed=61), tmp_path_factory.mktemp("model") / "e2style.pt")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("engine-cache"))


def entry_kinds(cache_uri: str, paths: bool = False):
    """The kinds of the engine cache's entries (sorted), or with ``paths`` their .bin files by kind."""
    fs = EngineCache(cache_uri).fs
    by_kind: dict[str, list[str]] = {}
    for meta in sorted(fs.glob(f"{cache_uri}/*.json")):
        by_kind.setdefault(json.loads(fs.cat(meta))["fields"]["kind"], []).append(meta.removesuffix(".json") + ".bin")
    return by_kind if paths else sorted(k for k, v in by_kind.items() for _ in v)


def reference(checkpoint, x):
    inverter = load_inverter(str(checkpoint))
    per_stage = inverter.invert(x, all_stages=True)
    return per_stage, inverter.synthesize(per_stage[-1])


def test_onnxruntime_matches_pytorch_for_several_batch_sizes_from_one_export(checkpoint, onnx_cache):
    engine = build_engine(str(checkpoint), EngineOptions(backend="onnxruntime", max_batch=4, cache_uri=onnx_cache))
    assert engine.gate_report.passed and [s.stage for s in engine.gate_report.stages] == [1, 2]
    for batch in (1, 3, 6):  # 6 runs as 4 + 2 through the same graphs
        x = images(batch, 3, 32, seed=batch)
        codes, recon = reference(checkpoint, x)
        got = engine.invert(x, all_stages=True)
        for k in range(2):
            torch.testing.assert_close(got[k], codes[k], rtol=0, atol=2e-5)
        torch.testing.assert_close(engine.synthesize(got[-1]), recon, rtol=0, atol=2e-5)
    # One ONNX file per graph: stage 1, stage 2 and the synthesis; and the gate's verdict.
    assert entry_kinds(onnx_cache) == ["gate", "onnx", "onnx", "onnx"]


def test_a_second_build_is_a_cache_hit_and_a_truncated_entry_is_rebuilt(checkpoint, onnx_cache, monkeypatch, caplog):
    options = EngineOptions(backend="onnxruntime", max_batch=4, cache_uri=onnx_cache)
    build_engine(str(checkpoint), options, gate=False)  # fills the cache if the test above did not
    exports = []
    real_export = backends.export_onnx
    monkeypatch.setattr(backends, "export_onnx", lambda *a, **k: exports.append(1) or real_export(*a, **k))
    build_engine(str(checkpoint), options, gate=False)
    assert exports == []  # every graph came from the cache

    cache = EngineCache(onnx_cache)
    victim = entry_kinds(onnx_cache, paths=True)["onnx"][0]
    size = cache.fs.size(victim)
    with open(victim, "r+b") as f:
        f.truncate(size // 2)
    with caplog.at_level(logging.WARNING):
        engine = build_engine(str(checkpoint), options)
    assert exports == [1] and cache.fs.size(victim) == size
    assert "is damaged" in caplog.text and engine.gate_report.passed

    build_engine(str(checkpoint), EngineOptions(backend="onnxruntime", max_batch=8, cache_uri=onnx_cache), gate=False)
    assert len(exports) == 4  # another profile: every graph is a miss


def test_a_passed_gate_verdict_is_kept_and_reused_only_for_the_same_engine(checkpoint, tmp_path, monkeypatch):
    options = EngineOptions(cache_uri=str(tmp_path / "cache"))  # the fused generator: gated against grouped
    first = build_engine(str(checkpoint), options)
    assert first.gate_report.passed and first.gate_report.stages[-1].psnr_db > 100

    def no_gating(*args, **kwargs):
        raise AssertionError("gated again although the cache holds the verdict")

    real_check = engine_module.check_engine
    monkeypatch.setattr(engine_module, "check_engine", no_gating)
    again = build_engine(str(checkpoint), options)
    assert again.gate_report == first.gate_report  # the same numbers, read back
    monkeypatch.setattr(engine_module, "check_engine", lambda *a, **k: checked.append(1) or real_check(*a, **k))
    checked: list[int] = []
    build_engine(str(checkpoint), EngineOptions(modulation="fused-folded", cache_uri=options.cache_uri))
    build_engine(str(checkpoint), EngineOptions(gate=GateThresholds(min_psnr_db=90), cache_uri=options.cache_uri))
    other = write_official(make_e2style(stages=2, seed=8), tmp_path / "other.pt")
    build_engine(str(other), options)
    monkeypatch.setattr(engine_module, "engine_code_digest", lambda: "other code")
    build_engine(str(checkpoint), options)
    assert checked == [1, 1, 1, 1]  # another form, other limits, other weights, other code: gated again


def test_a_failed_gate_verdict_is_not_kept(checkpoint, tmp_path):
    options = EngineOptions(precision="bfloat16", gate=GateThresholds(min_psnr_db=500), cache_uri=str(tmp_path / "c"))
    with pytest.raises(AccuracyGateFailed):
        build_engine(str(checkpoint), options)
    assert not list((tmp_path / "c").glob("*.json"))


def test_cache_entries_round_trip_and_are_keyed_by_every_field(tmp_path):
    cache = EngineCache(str(tmp_path / "c"))
    fields = {"kind": "tensorrt", "precision": "float16", "tensorrt": "10.9", "gpu": "NVIDIA H100"}
    assert cache.get(fields) is None
    cache.put(fields, b"plan bytes")
    assert cache.get(fields) == b"plan bytes"
    for change in ({"precision": "bfloat16"}, {"tensorrt": "10.10"}, {"gpu": "NVIDIA H200"}):
        assert cache_key({**fields, **change}) != cache_key(fields)
        assert cache.get({**fields, **change}) is None
    built = []
    entry = cache.get_or_build(fields, lambda: built.append(1) or b"x")
    assert (entry.hit, entry.data, built) == (True, b"plan bytes", [])
    (tmp_path / "c" / f"{cache_key(fields)}.bin").write_bytes(b"plan bytez")  # same size, other bytes
    entry = cache.get_or_build(fields, lambda: b"rebuilt")
    assert (entry.hit, entry.data, cache.get(fields)) == (False, b"rebuilt", b"rebuilt")


def perturbed(engine, graph, offset):
    run = engine.runners[graph]
    engine.runners[graph] = lambda **inputs: run(**inputs) + offset
    return engine


def test_the_gate_refuses_a_perturbed_engine_and_names_the_stage(checkpoint, onnx_cache, monkeypatch):
    real_build = engine_module._build
    monkeypatch.setattr(engine_module, "_build", lambda *a: perturbed(real_build(*a), "stage2", 0.01))
    monkeypatch.setattr(engine_module, "engine_code_digest", lambda: "perturbed")  # not the code of kept verdicts
    with pytest.raises(AccuracyGateFailed) as failure:
        build_engine(str(checkpoint), EngineOptions(backend="onnxruntime", max_batch=4, cache_uri=onnx_cache))
    message = str(failure.value)
    assert message.startswith("onnxruntime float32 FAILED the accuracy gate: stage 2: W+ max error 0.01 (limit 0.001)")
    assert "stage 1" not in message
    assert [s.stage for s in failure.value.report.failures] == [2]


def test_a_failed_gate_falls_back_to_the_next_precision(checkpoint):
    strict = GateThresholds(max_wplus_error=1e-7)  # bfloat16 cannot meet this
    with pytest.raises(AccuracyGateFailed, match=r"torch bfloat16 FAILED the accuracy gate: stage 1: W\+ max error"):
        build_engine(str(checkpoint), EngineOptions(precision="bfloat16", gate=strict))
    # The fallback is the float32 research form, the reference itself.
    options = EngineOptions(precision="bfloat16", fallback=("float32",), gate=strict, modulation="grouped")
    engine = build_engine(str(checkpoint), options)
    assert engine.options.precision == "float32"
    x = images(2, 3, 32, seed=9)
    torch.testing.assert_close(engine.invert(x), reference(checkpoint, x)[0][-1], rtol=0, atol=1e-5)


def test_bfloat16_passes_the_default_gate_with_its_numbers(checkpoint):
    engine = build_engine(str(checkpoint), EngineOptions(precision="bfloat16"))
    report = engine.gate_report
    assert report.passed and report.thresholds == GateThresholds(0.1, 40.0)
    assert all(0 < s.wplus_max_error < 0.1 and s.psnr_db > 40 for s in report.stages)


def test_psnr_definition():
    a = torch.zeros(1, 3, 4, 4)
    assert psnr_db(a, a) == float("inf")
    # An error of 0.02 everywhere on a peak-to-peak range of 2: 10 log10(4 / 0.0004) = 40 dB.
    assert psnr_db(a, a + 0.02) == pytest.approx(40.0)
    assert psnr_db(a, a + 5) == psnr_db(a, a + 1)  # clamped to [-1, 1] first


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(backend="tvm"), "unknown engine backend 'tvm'"),
        (dict(precision="int8"), "unknown precision 'int8'"),
        (dict(backend="onnxruntime", precision="float16"), "onnxruntime backend runs float32 only"),
        (dict(min_batch=8, max_batch=4), r"1 <= min_batch <= opt_batch <= max_batch, got 8, 4, 4"),
        (dict(cuda_graphs=True), "cuda_graphs needs compile"),
        (dict(modulation="unfolded"), "unknown generator form 'unfolded'; known: grouped, batched, folded, fused, fused-folded"),
    ],
)
def test_options_are_validated(options, message):
    with pytest.raises(ValueError, match=message):
        EngineOptions(**options)


def test_tensorrt_needs_a_gpu(checkpoint):
    with pytest.raises(ValueError, match="the tensorrt backend needs a CUDA device"):
        build_engine(str(checkpoint), EngineOptions(backend="tensorrt"), device="cpu")


def test_graphs_compute_the_generator_in_the_form_asked_for_and_leave_the_model_alone(checkpoint):
    from engines.checkpoints import load_e2style
    from engines.graphs import model_graphs

    model, _ = load_e2style(str(checkpoint))
    graphs = dict(model_graphs(model, 2, exportable=False, form="batched").modules)
    assert graphs["synthesis"].generator.config.modulation == "batched"
    assert model.decoder.config.modulation == "grouped"
    assert dict(model_graphs(model, 2, exportable=False).modules)["synthesis"].generator is model.decoder
    # Exported graphs cannot hold the grouped form (its graph depends on the batch); the others stay.
    assert dict(model_graphs(model, 1, exportable=True).modules)["synthesis"].generator.config.modulation == "batched"
    fused = dict(model_graphs(model, 1, True, "fused-folded", torch.bfloat16).modules)["synthesis"]
    assert isinstance(fused, FusedSynthesis) and fused.constant.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown generator form 'tiled'"):
        model_graphs(model, 1, exportable=False, form="tiled")


def test_engines_run_the_fused_generator_unless_asked_and_only_the_research_form_is_the_reference():
    assert EngineOptions().modulation == "fused" and not EngineOptions().is_reference
    assert EngineOptions(modulation="grouped").is_reference
    assert not EngineOptions(modulation="grouped", precision="bfloat16").is_reference
    assert not EngineOptions(modulation="batched").is_reference


@pytest.mark.parametrize(
    "form,precision",
    [
        ("batched", "float32"), ("folded", "float32"), ("folded", "bfloat16"), ("fused", "float32"),
        ("fused-folded", "float32"), ("fused", "bfloat16"), ("fused-folded", "float16"),
    ],
)
def test_every_generator_form_of_an_engine_matches_the_reference(checkpoint, form, precision):
    engine = build_engine(str(checkpoint), EngineOptions(modulation=form, precision=precision))
    x = images(5, 3, 32, seed=4)
    per_stage, recon = reference(checkpoint, x)
    tolerance = 2e-5 if precision == "float32" else 0.1
    torch.testing.assert_close(engine.invert(x), per_stage[-1], rtol=0, atol=tolerance)
    if precision == "float32":
        torch.testing.assert_close(engine.synthesize(per_stage[-1]), recon, rtol=0, atol=2e-5)


@pytest.mark.slow
def test_compiled_torch_matches_eager(checkpoint):
    engine = build_engine(str(checkpoint), EngineOptions(compile=True), gate=False)
    x = images(3, 3, 32, seed=2)
    torch.testing.assert_close(engine.invert(x), reference(checkpoint, x)[0][-1], rtol=0, atol=2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_tensorrt_engines_pass_the_gate_and_load_from_the_cache(checkpoint, tmp_path, precision):
    pytest.importorskip("tensorrt")
    options = EngineOptions(backend="tensorrt", precision=precision, max_batch=8, cache_uri=str(tmp_path))
    engine = build_engine(str(checkpoint), options, device="cuda")
    assert engine.gate_report.passed, engine.gate_report.describe()
    x = images(5, 3, 32, seed=3)
    again = build_engine(str(checkpoint), options, device="cuda", gate=False)  # plans from the cache
    torch.testing.assert_close(again.invert(x.cuda()), engine.invert(x.cuda()), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("form", ["fused", "fused-folded"])
@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_fused_generator_engines_on_cuda_pass_the_gate_and_match_the_cpu(checkpoint, form, precision):
    engine = build_engine(str(checkpoint), EngineOptions(modulation=form, precision=precision), device="cuda")
    assert engine.gate_report.passed, engine.gate_report.describe()
    x = images(5, 3, 32, seed=6)
    per_stage, recon = reference(checkpoint, x)
    tolerance = 1e-4 if precision == "float32" else 0.1
    torch.testing.assert_close(engine.invert(x.cuda()).cpu(), per_stage[-1], rtol=0, atol=tolerance)
    if precision == "float32":
        torch.testing.assert_close(engine.synthesize(per_stage[-1].cuda()).cpu(), recon, rtol=0, atol=1e-4)
