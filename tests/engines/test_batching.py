"""The engine's choice of batch, with a fake timer: the fastest that fits, the smaller of two nearly equal,
remembered in the engine cache."""

import pytest
import torch

from engines.batching import pick_batch
from engines.checkpoints import load_e2style
from engines.engine import EngineOptions, build_engine, choose_batch
from factories import make_e2style, write_official


def rates_with_a_cliff(rates):
    calls = []

    def measure(batch):
        calls.append(batch)
        if rates[batch] is None:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return rates[batch]

    return measure, calls


def test_the_fastest_batch_that_fits_and_the_smaller_of_near_equals():
    measure, calls = rates_with_a_cliff({8: 100.0, 16: 190.0, 32: 200.0, 64: 197.0, 128: None})
    batch, rates = pick_batch(measure)
    assert batch == 32 and rates == {8: 100.0, 16: 190.0, 32: 200.0, 64: 197.0}
    assert calls == [8, 16, 32, 64, 128]  # stopped at the first that ran out of memory
    measure, _ = rates_with_a_cliff({8: 100.0, 16: 199.0, 32: 200.0, 64: 18.0, 128: 19.0})  # a cliff at 64
    assert pick_batch(measure)[0] == 16
    measure, _ = rates_with_a_cliff({8: None, 16: 1.0, 32: 1.0, 64: 1.0, 128: 1.0})
    with pytest.raises(ValueError, match="not even a batch of 8 fits"):
        pick_batch(measure)


def test_the_engine_keeps_its_choice_and_the_cache_remembers_it(tmp_path):
    checkpoint = write_official(make_e2style(stages=1, seed=5), tmp_path / "e2style.pt")
    options = EngineOptions(pick_batch=True, max_batch=4, opt_batch=4, cache_uri=str(tmp_path / "cache"))
    model, _ = load_e2style(str(checkpoint))
    measure, calls = rates_with_a_cliff({8: 10.0, 16: 30.0, 32: 31.0, 64: 12.0, 128: None})
    engine = choose_batch(build_engine(str(checkpoint), options), model, measure)
    assert (engine.options.max_batch, engine.options.opt_batch, engine.options.pick_batch) == (32, 4, False)
    assert calls == [8, 16, 32, 64, 128]
    again = choose_batch(build_engine(str(checkpoint), options), model, measure)
    assert again.options.max_batch == 32 and len(calls) == 5  # from the cache: nothing timed again
    x = torch.rand(40, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(again.invert(x), engine.invert(x))  # pieces of 32 and 8
    fixed = build_engine(str(checkpoint), EngineOptions(max_batch=4))
    assert choose_batch(fixed, model, measure).options.max_batch == 4  # a batch the spec fixes stays


def test_jobs_let_the_engine_pick_on_gpus_unless_the_spec_fixes_the_batch(tmp_path):
    from pipeline.core.preflight import engine_options
    from pipeline.inversion.spec import InversionSpec

    def options(resources, engine=None):
        return engine_options(InversionSpec.model_validate({
            "input": {"uri": str(tmp_path)}, "model": {"checkpoint": "m.pt"}, "output": {"uri": str(tmp_path / "o")},
            "resources": resources, "engine": engine or {},
        }))

    assert options({"num_gpus_per_actor": 1}).pick_batch
    assert not options({"num_gpus_per_actor": 0}).pick_batch
    assert not options({"num_gpus_per_actor": 1}, {"max_batch": 64}).pick_batch
    assert not options({"num_gpus_per_actor": 1}, {"backend": "onnxruntime"}).pick_batch


def test_the_spec_names_every_generator_form_and_passes_it_to_the_engine(tmp_path):
    import typing

    from engines.graphs import GENERATOR_FORMS
    from pipeline.core.preflight import engine_options
    from pipeline.core.spec import EngineSpec
    from pipeline.inversion.spec import InversionSpec

    assert typing.get_args(EngineSpec.model_fields["modulation"].annotation) == GENERATOR_FORMS
    spec = InversionSpec.model_validate({
        "input": {"uri": str(tmp_path)}, "model": {"checkpoint": "m.pt"}, "output": {"uri": str(tmp_path / "o")},
        "engine": {"modulation": "fused-folded"},
    })
    assert engine_options(spec).modulation == "fused-folded"
    assert engine_options(spec.model_copy(update={"engine": EngineSpec()})).modulation == "fused"
