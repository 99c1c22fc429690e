"""Editing quality in the evaluation job (the paper's Table II) on the tiny seeded model and seeded metric
networks: each record's last scored codes moved along a direction by each strength, rendered and scored
against its input. Edited identities and FID features equal a direct computation, strength 0 equals the
reconstruction's scores, the edits' FID from merged shard statistics equals one pass over every feature,
the compared precisions' rows are not edited (NaN), and bad directions and specs are refused before any work."""

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from helpers import make_image_folder, png_bytes
from engines import checkpoint_sha256
from engines.engine import EngineOptions, build_engine
from engines.metric_weights import load_metric_net
from jobs import evaluate
from jobs.cli import EXIT_BAD_SPEC, EXIT_OK
from operators.images import images_to_tensor, tensor_to_images
from operators.metric_nets import FeatureStatistics, fid_from_statistics, identity_similarity
from pipeline.evaluate.model import EditDirection, EvaluateModel, MetricWeights
from pipeline.evaluate.spec import EvaluateSpec
import test_evaluate_job as job_tests
from test_evaluate_job import decoded, fid_restated, read_rows, unit, write_spec

checkpoint, weights, one_thread = job_tests.checkpoint, job_tests.weights, job_tests.one_thread  # its fixtures

NUM_WS, STYLE_DIM = 10, 32  # the tiny model's W+


@pytest.fixture(scope="module")
def direction_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("direction") / "direction.npy"
    np.save(path, np.random.default_rng(7).standard_normal(STYLE_DIM).astype(np.float32))
    return path


def direct_edits(engine, nets: dict, inputs: np.ndarray, direction: np.ndarray, strengths, layers, stage: int) -> dict:
    """Each strength's scores by the definition: the stage's codes plus strength x direction on ``layers``,
    rendered as the official tensor2im, the identity embedding and FID features of the result on [0, 1]."""
    codes = engine.invert(images_to_tensor(inputs), all_stages=True)[stage - 1]
    step = torch.as_tensor(direction).expand(NUM_WS, STYLE_DIM)[list(layers)]
    out = {}
    with torch.inference_mode():
        for i, strength in enumerate(strengths):
            moved = codes.clone()
            moved[:, list(layers)] += strength * step
            edited = unit(tensor_to_images(engine.synthesize(moved)).numpy()).float()
            if "identity" in nets:
                embeddings = nets["identity"](unit(inputs).float()), nets["identity"](edited)
                out[f"identity_edit{i}"] = identity_similarity(*embeddings).numpy()
            if "fid" in nets:
                out[f"fid_edit{i}"] = nets["fid"](edited).numpy()
    return out


def networks(weights, metrics) -> tuple[MetricWeights, ...]:
    return tuple(MetricWeights(m, str(weights[m]), {}, None, checkpoint_sha256(str(weights[m]))) for m in metrics)


def test_the_model_step_scores_each_edit_as_its_definition(checkpoint, weights, one_thread):
    engine = build_engine(str(checkpoint), EngineOptions(max_batch=2), gate=False)
    images = np.stack([np.asarray(Image.open(io.BytesIO(png_bytes(i)))) for i in range(3)])
    direction = np.random.default_rng(3).standard_normal((NUM_WS, STYLE_DIM)).astype(np.float32)
    strengths, layers = (-2.0, 0.0, 1.5), (1, 3, 9)
    # Stage 1 of a 2-stage model: the edits move the last *scored* stage's codes; bfloat16 is compared.
    step = EvaluateModel(("psnr", "identity", "fid"), (1,), networks(weights, ("identity", "fid")), ("bfloat16",),
                         str(checkpoint), {}, ("identity",), 1, EditDirection(direction, strengths, layers))
    result = step(engine, images, 2)
    mine, compared = result.scores
    nets = {m: load_metric_net(m, str(weights[m])).module for m in ("identity", "fid")}
    for start in (0, 2):  # the step's batches: a full one and a part
        want = direct_edits(engine, nets, images[start : start + 2], direction, strengths, layers, stage=1)
        for i in range(3):
            got = mine[f"identity_edit{i}"][start : start + 2]
            np.testing.assert_allclose(got, want[f"identity_edit{i}"], rtol=0, atol=2e-6)
            np.testing.assert_allclose(mine[f"fid_edit{i}"][start : start + 2], want[f"fid_edit{i}"], rtol=0, atol=1e-5)
    # Strength 0 renders the reconstruction itself: the stage's own scores, bit for bit.
    np.testing.assert_array_equal(mine["identity_edit1"], mine["identity_stage1"])
    np.testing.assert_array_equal(mine["fid_edit1"], mine["fid_stage1"])
    assert np.abs(mine["identity_edit0"] - mine["identity_stage1"]).min() > 1e-4  # the edit changes every image
    # The compared precision is scored, not edited: its edit columns are NaN of the same shapes.
    assert np.isfinite(compared["identity_stage1"]).all()
    for i in range(3):
        assert compared[f"identity_edit{i}"].shape == (3,) and np.isnan(compared[f"identity_edit{i}"]).all()
        assert compared[f"fid_edit{i}"].shape == (3, 2048) and np.isnan(compared[f"fid_edit{i}"]).all()

    # A part with no records has the same columns in the same order (one Parquet schema for every shard).
    empty = step(engine, images[:0], 2)
    assert list(empty.scores[0]) == list(mine) and empty.scores[0]["fid_edit2"].shape == (0, 2048)
    # Without fid, identity alone.
    alone = EvaluateModel(("identity",), (2,), networks(weights, ("identity",)), (), str(checkpoint), {}, (), 0,
                          EditDirection(direction[0], (4.0,), (0, 1)))(engine, images[:2], 2)
    assert [c for c in alone.scores[0] if "edit" in c] == ["identity_edit0"]
    want = direct_edits(engine, {"identity": nets["identity"]}, images[:2], direction[0], (4.0,), (0, 1), stage=2)
    np.testing.assert_allclose(alone.scores[0]["identity_edit0"], want["identity_edit0"], rtol=0, atol=2e-6)


def test_editing_quality_end_to_end_with_the_report_of_table_ii(
    ray_local, checkpoint, weights, direction_file, tmp_path, capsys, one_thread
):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=5)
    strengths = [-3.0, 0.0, 2.5]
    edit = {"direction": str(direction_file), "strengths": strengths}
    # No compared precision here: the model step's test checks that its rows are not edited.
    spec = write_spec(tmp_path / "s.yaml", folder, out, checkpoint, weights, input={"shard_size": 2},
                      metrics={"compute": ["psnr", "identity", "fid"]}, evaluate={"best_worst": 1, "edit": edit})
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    capsys.readouterr()

    # Three shards of one schema: identity_edit<i> float64, fid_edit<i> 2048 float32.
    files = sorted(out.glob("shard-*.parquet"))
    schemas = [pq.read_schema(f).remove_metadata() for f in files]
    assert len(files) == 3 and all(s.equals(schemas[0]) for s in schemas)
    assert schemas[0].field("identity_edit2").type == pa.float64()
    assert schemas[0].field("fid_edit2").type.list_size == 2048
    assert schemas[0].field("fid_edit2").type.value_type == pa.float32()

    rows = read_rows(str(out))
    f32 = np.array(rows["engine"]) == "torch float32"
    keys = [k for k, m in zip(rows["key"], f32) if m]
    assert f32.all()
    engine = build_engine(str(checkpoint), EngineOptions(max_batch=2), gate=False)
    nets = {m: load_metric_net(m, str(weights[m])).module for m in ("identity", "fid")}
    direction = np.load(direction_file)
    for start in (0, 2, 4):  # a shard each, one batch each
        batch = keys[start : start + 2]
        pictures = np.stack([decoded(folder, k) for k in batch])
        want = direct_edits(engine, nets, pictures, direction, strengths, range(8), stage=2)
        for i in range(3):
            got = np.array(rows[f"identity_edit{i}"])[f32][start : start + 2]
            np.testing.assert_allclose(got, want[f"identity_edit{i}"], rtol=0, atol=2e-6)
            got = np.array(rows[f"fid_edit{i}"])[f32][start : start + 2]
            np.testing.assert_allclose(got, want[f"fid_edit{i}"], rtol=0, atol=1e-5)

    report = json.loads((out / "_report.json").read_text())
    editing = report["editing"]
    assert {k: editing[k] for k in ("direction", "direction_sha256", "layers", "stage", "engine")} == {
        "direction": str(direction_file), "direction_sha256": checkpoint_sha256(str(direction_file)),
        "layers": list(range(8)), "stage": 2, "engine": "torch float32",
    }
    assert [(e["strength"], e["columns"]) for e in editing["strengths"]] == [
        (s, [f"identity_edit{i}", f"fid_edit{i}"]) for i, s in enumerate(strengths)]
    inputs = np.array(rows["fid_input"])[f32]
    for i, entry in enumerate(editing["strengths"]):
        identities = np.array(rows[f"identity_edit{i}"])[f32]
        p5, median, p95 = np.percentile(identities, [5, 50, 95])
        want = {"count": 5, "mean": identities.mean(), "std": identities.std(), "median": median, "p5": p5, "p95": p95}
        assert entry["identity"] == pytest.approx(want, rel=1e-12)
        edited = np.array(rows[f"fid_edit{i}"])[f32]
        if i == 0:  # (each one-pass FID decomposes two 2048x2048 matrices: once is enough)
            one_pass = fid_from_statistics(*(FeatureStatistics.of(torch.from_numpy(f)) for f in (inputs, edited)))
            assert entry["fid"] == pytest.approx(one_pass, rel=1e-10)  # 3 shards merged, or all at once
        assert entry["fid"] == pytest.approx(fid_restated(inputs, edited), rel=1e-7)
    stage2 = report["results"]["torch float32"]["stages"]["stage2"]
    assert editing["strengths"][1]["identity"] == stage2["identity"] and editing["strengths"][1]["fid"] == stage2["fid"]
    assert editing["strengths"][0]["fid"] != pytest.approx(stage2["fid"], rel=1e-3)  # an edit is not the reconstruction

    markdown = (out / "_report.md").read_text()
    assert "## Editing quality" in markdown
    assert f"| 0 | {stage2['fid']:.2f} | {stage2['identity']['mean']:.4f} ± " in markdown
    assert "`identity_edit1`, `fid_edit1` |" in markdown
    assert Image.open(out / "_report.png").size[1] == 960  # a third row of charts: the edits across strengths

    # Another direction under the spec's same fields: the output's edit scores are not its, so it is refused.
    other = tmp_path / "other.npy"
    np.save(other, -direction)
    edit["direction"] = str(other)
    spec = write_spec(tmp_path / "s.yaml", folder, out, checkpoint, weights, input={"shard_size": 2},
                      metrics={"compute": ["psnr", "identity", "fid"]}, evaluate={"best_worst": 1, "edit": edit})
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_BAD_SPEC
    error = capsys.readouterr().err
    assert "evaluation.edit.direction_sha256" in error and checkpoint_sha256(str(other)) in error


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"direction": "{misshaped}", "strengths": [1]},
         r"evaluate\.edit\.direction: direction file .*misshaped\.npy has shape \[3, 32\]; this generator needs \[32\] "
         r"or \[10, 32\]"),
        ({"direction": "{missing}", "strengths": [1]},
         r"evaluate\.edit\.direction: direction file .*nowhere\.npy does not exist"),
        ({"direction": "{good}", "strengths": [1], "layers": [0, 10, 12]},
         r"evaluate\.edit\.layers: \[10, 12\] outside 0\.\.9 \(this generator has 10 W\+ layers\)"),
    ],
)
def test_a_bad_direction_or_layer_is_refused_before_any_work(checkpoint, weights, tmp_path, capsys, edit, message):
    make_image_folder(tmp_path / "in", good=1)
    np.save(tmp_path / "misshaped.npy", np.zeros((3, STYLE_DIM), np.float32))
    np.save(tmp_path / "good.npy", np.ones(STYLE_DIM, np.float32))
    files = {"{misshaped}": "misshaped.npy", "{missing}": "nowhere.npy", "{good}": "good.npy"}
    edit = {**edit, "direction": str(tmp_path / files[edit["direction"]])}
    spec = write_spec(tmp_path / "s.yaml", tmp_path / "in", tmp_path / "out", checkpoint, weights,
                      metrics={"compute": ["identity"]}, evaluate={"edit": edit})
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_BAD_SPEC
    error = capsys.readouterr().err
    assert any(re.search(message, line) for line in error.splitlines()), error
    assert not (tmp_path / "out").exists()


BASE = {"input": {"uri": "s3://faces/in/"}, "model": {"checkpoint": "s3://models/e2style.pt"},
        "output": {"uri": "s3://faces/out/"}, "metrics": {"compute": ["psnr", "identity"]}}


@pytest.mark.parametrize(
    "metrics,edit,message",
    [
        (["psnr", "lpips"], {"direction": "d.npy", "strengths": [1]},
         r"evaluate\.edit: edits are scored by identity similarity and FID against the inputs .* metrics\.compute has "
         r"neither; add identity and/or fid to metrics\.compute"),
        (["identity"], {"direction": "d.npy"}, r"evaluate\.edit\.strengths\n  Field required"),
        (["identity"], {"direction": "d.npy", "strengths": []},
         r"evaluate\.edit\.strengths\n  List should have at least 1"),
        (["identity"], {"direction": "d.npy", "strengths": [1, 2, 1]}, r"each strength may be named once"),
        (["identity"], {"direction": "d.npy", "strengths": list(range(17))}, r"List should have at most 16 items"),
        (["identity"], {"strengths": [1]}, r"evaluate\.edit\.direction\n  Field required"),
        (["identity"], {"direction": "d.npy", "strengths": [1], "layers": []},
         r"evaluate\.edit\.layers\n  List should have at least 1"),
        (["identity"], {"direction": "d.npy", "strengths": [1], "kind": "direction"},
         r"evaluate\.edit\.kind\n  Extra inputs"),
    ],
)
def test_bad_edit_sections_are_refused_by_the_spec(metrics, edit, message):
    with pytest.raises(ValidationError, match=message):
        EvaluateSpec.model_validate({**BASE, "metrics": {"compute": metrics}, "evaluate": {"edit": edit}})


def test_the_spec_wide_storage_options_reach_the_direction_which_counts_by_its_sha256_not_its_place():
    options = {"s3": {"endpoint_url": "http://127.0.0.1:9000", "key": "global"}}
    edit = {"direction": "s3://models/smile.npy", "strengths": [-2, 2], "direction_storage_options": {"key": "own"}}
    spec = EvaluateSpec.model_validate({**BASE, "storage_options": options, "evaluate": {"edit": edit}})
    assert spec.evaluate.edit.direction_storage_options == {"endpoint_url": "http://127.0.0.1:9000", "key": "own"}
    assert spec.fingerprinted()["evaluate"]["edit"] == {"strengths": [-2.0, 2.0], "layers": None}
    elsewhere = {**edit, "direction": "s3://elsewhere/smile.npy"}
    moved = EvaluateSpec.model_validate({**BASE, "evaluate": {"edit": elsewhere}})
    assert moved.output_fingerprint() == spec.output_fingerprint()
    stronger = EvaluateSpec.model_validate({**BASE, "evaluate": {"edit": {**edit, "strengths": [-3, 3]}}})
    assert stronger.output_fingerprint() != spec.output_fingerprint()
    # Without an edit the fingerprint is the one outputs written before editing quality existed have.
    assert "edit" not in EvaluateSpec.model_validate(BASE).fingerprinted()["evaluate"]
