"""One interface, one recurrence, one registry: what load_inverter and build_engine share."""

import inspect

import onnx
import pytest
import torch

from engines import InversionModel, load_inverter
from engines.backends import BACKENDS, BUILDERS, backend_builder
from engines.checkpoints import load_e2style
from engines.engine import EngineOptions, build_engine
from engines.graphs import export_onnx, model_graphs
from engines.runners import eager_runner, invert_stages
from factories import images, make_e2style, write_official


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(write_official(make_e2style(stages=3, seed=71), tmp_path_factory.mktemp("model") / "e2style.pt"))


def test_the_inverter_and_engines_are_inversion_models(checkpoint):
    inverter = load_inverter(checkpoint, stages=2)
    engine = build_engine(checkpoint, EngineOptions(max_batch=2), stages=2)
    x = images(3, 3, 32, seed=1)
    for model in (inverter, engine):
        assert isinstance(model, InversionModel)
        assert model.stages == 2 and model.config.stages == 2 and model.device == torch.device("cpu")
        assert model.info.uri == checkpoint and model.info.stages_stored == 3
        per_stage = model.invert(x, all_stages=True)
        assert [tuple(c.shape) for c in per_stage] == [(3, 10, 32)] * 2
        assert model.synthesize(per_stage[-1]).shape == (3, 3, 32, 32)
    assert not isinstance(object(), InversionModel)


def test_one_recurrence_gives_the_operators_codes_at_every_stage(checkpoint):
    model, _ = load_e2style(checkpoint)
    x = images(3, 3, 32, seed=2)
    with torch.inference_mode():
        official = model.invert(x)
    graphs = model_graphs(model, 3, exportable=False)
    runners = {name: eager_runner(graph, torch.device("cpu")) for name, graph in graphs}
    research_engine = build_engine(checkpoint, EngineOptions(modulation="grouped", channels_last=False))
    for per_stage in (
        invert_stages(runners, x, 3),
        load_inverter(checkpoint).invert(x, all_stages=True),
        research_engine.invert(x, all_stages=True),
    ):
        assert len(per_stage) == 3
        for got, expected in zip(per_stage, official):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert research_engine.gate_report is None  # the reference is not gated against itself


def test_the_backend_registry_refuses_an_unknown_name_listing_the_known_ones():
    assert BACKENDS == tuple(BUILDERS) == ("torch", "onnxruntime", "tensorrt", "aoti")
    assert all(backend_builder(name) is BUILDERS[name] for name in BACKENDS)
    with pytest.raises(ValueError, match=r"^unknown engine backend 'tvm'; known: torch, onnxruntime, tensorrt, aoti$"):
        backend_builder("tvm")


@pytest.mark.parametrize("exportable,form", [(False, None), (True, None), (False, "fused"), (True, "fused-folded")])
def test_graphs_declare_their_forward_arguments_and_make_inputs_for_them(exportable, form):
    model = make_e2style(stages=2, seed=72)
    graphs = model_graphs(model, 2, exportable, form)
    assert [name for name, _ in graphs] == ["stage1", "stage2", "synthesis"]
    for name, graph in graphs:
        assert tuple(inspect.signature(graph.forward).parameters) == graph.input_names
        passed = {"stage1": ("images",), "synthesis": ("codes",)}.get(name, ("images", "reconstruction"))
        assert graph.input_names == passed  # the names invert_stages gives the runners
        inputs = graph.example_inputs(3)
        assert tuple(inputs) == graph.input_names and all(len(t) == 3 for t in inputs.values())
        with torch.inference_mode():
            out = graph(*inputs.values())
        expected = {"codes": (3, 10, 32), "reconstruction": (3, 3, 32, 32)}[graph.output_name]
        assert tuple(out.shape) == expected, name


def test_exported_graphs_carry_the_declared_names():
    (refine,) = [g for name, g in model_graphs(make_e2style(stages=2, seed=73), 2, exportable=True) if name == "stage2"]
    exported = onnx.load_from_string(export_onnx(refine, 4))
    assert [i.name for i in exported.graph.input] == ["images", "reconstruction"]
    assert [o.name for o in exported.graph.output] == ["codes"]
