"""The evaluation job end to end on tiny seeded models and seeded metric networks in the published layouts:
every score equals a direct computation, the report equals numpy over the Parquet columns, FID from merged
shard statistics equals FID over all features at once, resume and a retry of rejects give the report of one
pass, bad specs and weight files are refused before any work, on disks and on S3."""

import dataclasses
import io
import json
import re
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from helpers import make_image_folder, png_bytes
from engines import checkpoint_sha256, official_checkpoint
from engines.engine import EngineOptions, build_engine
from engines.metric_weights import load_metric_net, random_metric_weights, write_random_metric_weights
from factories import make_e2style, randomize_, write_official
from jobs import evaluate
from jobs.cli import EXIT_BAD_SPEC, EXIT_OK
from operators.e2style import E2Style
from operators.images import images_to_tensor, tensor_to_images
from operators.metric_nets import FeatureStatistics, fid_from_statistics, identity_similarity
from operators.metrics import l2, ms_ssim, psnr, ssim
from operators.presets import get_preset
from pipeline.core.store import PREVIEW_GAP, PREVIEW_TILE, latent_codes
from pipeline.evaluate import model as model_step
from pipeline.evaluate.model import EvaluateModel, timed_stages
from pipeline.evaluate.report import HEADER_HEIGHT, LABEL_WIDTH, REPORT_FILES, TITLE_HEIGHT
from pipeline.evaluate.steps import ranked, sheet_records, shortlist

SIZE = 32  # the tiny model's images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_official(make_e2style(stages=2, seed=91), tmp_path_factory.mktemp("model") / "e2style.pt")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("metric-weights")
    paths = {metric: root / f"{metric}.pth" for metric in ("lpips", "identity", "fid")}
    for seed, (metric, path) in enumerate(paths.items()):
        write_random_metric_weights(metric, str(path), seed=seed + 5)
    return paths


def write_spec(path: Path, folder, out, checkpoint, weights=None, **sections) -> Path:
    spec = {
        "input": {"uri": str(folder), "shard_size": 3},
        "model": {"checkpoint": str(checkpoint)},
        "output": {"uri": str(out)},
        "resources": {"batch_size": 2},
        "max_failure_rate": 0.5,
    }
    metrics = sections.pop("metrics", {})
    if weights:
        metrics = {**{m: {"weights": str(p)} for m, p in weights.items() if m in metrics["compute"]}, **metrics}
    spec["metrics"] = metrics
    for section, values in sections.items():
        spec[section] = {**spec.get(section, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(spec))
    return path


def read_rows(uri: str, storage_options=None) -> dict:
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    tables = [pq.read_table(fs.open(p, "rb")) for p in sorted(fs.glob(f"{root.rstrip('/')}/shard-*.parquet"))]
    names = [name for name in tables[0].column_names if name != "w_plus"]
    rows = {name: [v for t in tables for v in t.column(name).to_pylist()] for name in names}
    rows["w_plus"] = np.concatenate([latent_codes(t) for t in tables])
    return rows


def decoded(folder: Path, key: str) -> np.ndarray:
    return np.asarray(Image.open(folder / key).convert("RGB"))


def unit(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(images).permute(0, 3, 1, 2).double() / 255


def direct_scores(engine, nets: dict, inputs: np.ndarray, stages=(1, 2)) -> dict[str, np.ndarray]:
    """Every score of one batch as the definitions give it: each stage's codes rendered as the official
    tensor2im, compared with the input on [0, 1]."""
    codes = engine.invert(images_to_tensor(inputs), all_stages=True)
    out = {"w_plus": codes[-1].numpy()}
    with torch.inference_mode():
        for k in stages:
            rendered = tensor_to_images(engine.synthesize(codes[k - 1])).numpy()
            a, b = unit(inputs), unit(rendered)
            out.update({f"{name}_stage{k}": metric(a, b).numpy() for name, metric in (("psnr", psnr), ("ssim", ssim), ("l2", l2))})
            if "lpips" in nets:
                out[f"lpips_stage{k}"] = nets["lpips"](a.float(), b.float()).double().numpy()
            if "identity" in nets:
                embeddings = nets["identity"](a.float()), nets["identity"](b.float())
                out[f"identity_stage{k}"] = identity_similarity(*embeddings).numpy()
            if "fid" in nets:
                out[f"fid_stage{k}"] = nets["fid"](b.float()).numpy()
        if "fid" in nets:
            out["fid_input"] = nets["fid"](unit(inputs).float()).numpy()
    return out


@pytest.fixture
def one_thread():
    """The actors run torch on one thread (num_cpus_per_actor: 1): the direct computation does too, so
    both sum in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def report_without_timing(path: Path) -> dict:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "devices")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return strip(json.loads(path.read_text()))


def flat(value, path: str = "") -> dict:
    """A report as {path: value}, so that its numbers compare with pytest.approx."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}/{i}").items()}
    return {path: value}


def test_scores_equal_their_definitions_and_the_report_equals_numpy_over_the_rows(
    ray_local, checkpoint, weights, tmp_path, capsys, one_thread
):
    folder, out = tmp_path / "in", tmp_path / "out"
    keys = make_image_folder(folder, good=5, bad={"bad/empty.png": b""})
    compute = ["psnr", "ssim", "l2", "lpips", "identity"]
    spec = write_spec(tmp_path / "s.yaml", folder, out, checkpoint, weights, metrics={"compute": compute},
                      evaluate={"precisions": ["bfloat16"], "best_worst": 2})
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    assert "succeeded: 5 of 6 records evaluated, 1 rejected" in capsys.readouterr().out

    rows = read_rows(str(out))
    # Shard 0 holds three images, shard 1 two and the bad file; each shard's rows run engine by engine.
    shards = [["a/img_000.png", "a/img_002.png", "a/img_004.png"], ["b/img_001.png", "b/img_003.png"]]
    assert [k for shard in shards for k in shard] == keys
    assert rows["key"] == [k for shard in shards for k in shard * 2]
    assert rows["engine"] == [e for shard in shards for e in ["torch float32", "torch bfloat16"] for _ in shard]
    columns = [f"{m}_stage{k}" for k in (1, 2) for m in compute]
    assert [c for c in pq.read_schema(out / "shard-00000.parquet").names if c.endswith("stage2")] == [
        "psnr_stage2", "ssim_stage2", "l2_stage2", "lpips_stage2", "identity_stage2", "seconds_stage2"]

    nets = {m: load_metric_net(m, str(weights[m])).module for m in ("lpips", "identity")}
    for precision in ("float32", "bfloat16"):
        engine = build_engine(str(checkpoint), EngineOptions(precision=precision, max_batch=2), gate=False)
        for shard in shards:
            for start in range(0, len(shard), 2):  # the job's batches
                batch = shard[start : start + 2]
                want = direct_scores(engine, nets, np.stack([decoded(folder, k) for k in batch]))
                for i, key in enumerate(batch):
                    row = list(zip(rows["key"], rows["engine"])).index((key, engine.name))
                    np.testing.assert_allclose(rows["w_plus"][row], want["w_plus"][i], rtol=0, atol=1e-6)
                    for column in columns:
                        network = column.startswith(("lpips", "identity"))
                        assert rows[column][row] == pytest.approx(want[column][i], abs=2e-6 if network else 1e-9), (key, column)
                    # Two stages take the first stage's time, then a rendering and the second encoder more.
                    assert 0 < rows["seconds_stage1"][row] < rows["seconds_stage2"][row]
    by_engine = {e: np.array(rows["engine"]) == e for e in ("torch float32", "torch bfloat16")}
    psnr_f32 = np.array(rows["psnr_stage2"])[by_engine["torch float32"]]
    psnr_bf16 = np.array(rows["psnr_stage2"])[by_engine["torch bfloat16"]]
    assert np.abs(psnr_bf16 - psnr_f32).max() > 0  # reduced precision moves the reconstructions measurably

    report = json.loads((out / "_report.json").read_text())
    assert (report["images"], report["rejected"], report["engines"]) == (5, 1, ["torch float32", "torch bfloat16"])
    for engine, mine in by_engine.items():
        for k in (1, 2):
            for metric in (*compute, "seconds"):
                values = np.array(rows[f"{metric}_stage{k}"])[mine]
                got = report["results"][engine]["stages"][f"stage{k}"][metric]
                p5, median, p95 = np.percentile(values, [5, 50, 95])
                want = {"count": 5, "mean": values.mean(), "std": values.std(), "median": median, "p5": p5, "p95": p95}
                assert got == pytest.approx(want, rel=1e-12), (engine, k, metric)
    model = make_e2style(stages=2, seed=91)
    runs = [sum(p.numel() for n, p in encoder.named_parameters() if not n.startswith("body.4.")) for encoder in
            (model.encoder_firststage, model.encoder_refinestage_list[0])]
    assert report["parameters"]["encoder_run"] == runs
    assert report["parameters"]["generator"] == sum(p.numel() for p in model.decoder.parameters())
    assert report["results"]["torch float32"]["stages"]["stage2"]["encoder_parameters"] == sum(runs)
    assert report["metric_networks"]["identity"]["network"] == "arcface-ir-se50"

    # Best and worst over both shards, by identity and by PSNR at stage 2, of the job's engine.
    f32 = [(k, rows["identity_stage2"][r], rows["psnr_stage2"][r])
           for r, k in enumerate(rows["key"]) if by_engine["torch float32"][r]]
    by_identity = [k for k, _, _ in sorted(f32, key=lambda t: -t[1])]
    assert [b["key"] for b in report["best_worst"]["identity"]["best"]] == by_identity[:2]
    assert [b["key"] for b in report["best_worst"]["identity"]["worst"]] == by_identity[::-1][:2]
    by_psnr = [k for k, _, _ in sorted(f32, key=lambda t: -t[2])]
    assert [b["key"] for b in report["best_worst"]["psnr"]["best"]] == by_psnr[:2]
    # The sheet's first row is the best by identity: its input, scaled to a tile as the previews are.
    sheet = np.asarray(Image.open(out / "_best_worst.png").convert("RGB"))
    assert sheet.shape[1] == LABEL_WIDTH + 3 * (PREVIEW_TILE + PREVIEW_GAP) + PREVIEW_GAP
    top, left = TITLE_HEIGHT + HEADER_HEIGHT, LABEL_WIDTH + PREVIEW_GAP
    tile = np.asarray(Image.fromarray(decoded(folder, by_identity[0])).resize((PREVIEW_TILE, PREVIEW_TILE), Image.BILINEAR))
    np.testing.assert_array_equal(sheet[top : top + PREVIEW_TILE, left : left + PREVIEW_TILE], tile)
    markdown = (out / "_report.md").read_text()
    assert "| 2 | " in markdown and "![Best and worst records](_best_worst.png)" in markdown
    assert Image.open(out / "_report.png").size[0] > 1000

    assert evaluate.main([str(spec), "--verify"]) == EXIT_OK
    assert "every input record is there exactly once" in capsys.readouterr().out


def fid_restated(a: np.ndarray, b: np.ndarray) -> float:
    """FID of two feature sets [N, D] in one pass, in float64, by the definition restated for fewer samples
    than dimensions: Tr((S_a S_b)^(1/2)) is the sum of the singular values of A B^T / sqrt((n_a - 1)(n_b - 1))
    for the centred features A and B (S_a S_b shares its non-zero eigenvalues with A B^T B A^T)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    trace_sqrt = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (ca**2).sum() / na + (cb**2).sum() / nb - 2 * trace_sqrt)


def test_fid_from_merged_shard_statistics_equals_fid_over_all_features(ray_local, checkpoint, weights, tmp_path, one_thread):
    folder, out = tmp_path / "in", tmp_path / "out"
    keys = make_image_folder(folder, good=5)
    spec = write_spec(tmp_path / "s.yaml", folder, out, checkpoint, weights, input={"shard_size": 2},
                      metrics={"compute": ["psnr", "fid"]}, evaluate={"stages": [2], "best_worst": 1})
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows(str(out))
    assert rows["key"] == keys and len(list(out.glob("shard-*.parquet"))) == 3
    assert "psnr_stage1" not in rows and len(rows["fid_stage2"][0]) == 2048

    inputs, reconstructed = np.array(rows["fid_input"]), np.array(rows["fid_stage2"])
    report = json.loads((out / "_report.json").read_text())
    fid = report["results"]["torch float32"]["stages"]["stage2"]["fid"]
    one_pass = [FeatureStatistics.of(torch.from_numpy(f)) for f in (inputs, reconstructed)]
    assert fid == pytest.approx(fid_from_statistics(*one_pass), rel=1e-10)  # 3 shards merged, or all at once
    assert fid == pytest.approx(fid_restated(inputs, reconstructed), rel=1e-7)  # moments vs centred features: round-off

    net = {"fid": load_metric_net("fid", str(weights["fid"])).module}
    engine = build_engine(str(checkpoint), EngineOptions(max_batch=2), gate=False)
    want = direct_scores(engine, net, np.stack([decoded(folder, k) for k in keys[:2]]), stages=(2,))
    np.testing.assert_allclose(inputs[:2], want["fid_input"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(reconstructed[:2], want["fid_stage2"], rtol=0, atol=1e-5)


RESUMED = {"metrics": {"compute": ["psnr", "ssim", "l2"]}, "input": {"shard_size": 3}, "evaluate": {"best_worst": 2}}


@pytest.fixture(scope="module")
def one_pass(ray_local, checkpoint, tmp_path_factory) -> Path:
    """The output of one uninterrupted run over 8 images in 3 shards."""
    root = tmp_path_factory.mktemp("one-pass")
    make_image_folder(root / "in", good=8)
    spec = write_spec(root / "s.yaml", root / "in", root / "out", checkpoint, **RESUMED)
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    return root / "out"


def same_report(got: Path, want: Path, rel: float = 0.0) -> None:
    """Equal reports but for the timing fields; numbers to ``rel``."""
    got, want = flat(report_without_timing(got)), flat(report_without_timing(want))
    assert got.keys() == want.keys()
    numbers = {k for k, v in want.items() if isinstance(v, float)}
    assert {k: v for k, v in got.items() if k not in numbers} == {k: v for k, v in want.items() if k not in numbers}
    assert {k: got[k] for k in numbers} == pytest.approx({k: want[k] for k in numbers}, rel=rel, abs=0)


def test_a_resumed_run_gives_the_report_of_one_pass(one_pass, checkpoint, tmp_path, capsys):
    make_image_folder(tmp_path / "in", good=8)
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", tmp_path / "in", out, checkpoint, **RESUMED)
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    # As a kill leaves it: shard 1 written but not committed, no manifest and no report.
    for name in ("_stats/shard-00001.json", "_manifest.json", *REPORT_FILES):
        (out / name).unlink()
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    assert "(2 already committed)" in capsys.readouterr().out
    same_report(out / "_report.json", one_pass / "_report.json")
    assert (out / "_best_worst.png").read_bytes() == (one_pass / "_best_worst.png").read_bytes()


def test_a_retry_of_rejects_gives_the_report_and_sheets_of_one_pass(one_pass, checkpoint, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_image_folder(folder, good=8, bad={"b/img_003.png": b"not a png"})  # the record a retry recovers
    spec = write_spec(tmp_path / "s.yaml", folder, out, checkpoint, **RESUMED)
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    assert json.loads((out / "_report.json").read_text())["rejected"] == 1
    (folder / "b" / "img_003.png").write_bytes(png_bytes(3))  # the file as make_image_folder writes it
    assert evaluate.main([str(spec), "--no-progress", "--retry-rejects"]) == EXIT_OK
    # The recovered record's rows follow the others of its shard: sums in another order, equal to round-off.
    same_report(out / "_report.json", one_pass / "_report.json", rel=1e-12)
    # Its shard's preview was made anew from the old one and the recovered record's pictures: with 2 best and
    # 2 worst of 3 records it holds all 3 now, and the sheets show one of them.
    assert json.loads((out / "_stats" / "shard-00001.json").read_text())["preview_rows"] == 3
    sheets = json.loads((out / "_report.json").read_text())["best_worst"]["psnr"]
    assert "shard-00001" in {item["shard"] for side in ("best", "worst") for item in sheets[side]}
    assert (out / "_best_worst.png").read_bytes() == (one_pass / "_best_worst.png").read_bytes()
    assert evaluate.main([str(spec), "--verify"]) == EXIT_OK


def test_on_object_storage_with_the_spec_wide_storage_options(ray_local, s3_server, checkpoint, weights, tmp_path, capsys):
    options = {"endpoint_url": s3_server}
    s3 = fsspec.filesystem("s3", **options)
    s3.mkdir("evaluation")
    folder = tmp_path / "in"
    keys = make_image_folder(folder, good=3)
    s3.put(str(folder) + "/", "evaluation/faces/", recursive=True)
    s3.put(str(checkpoint), "evaluation/e2style.pt")
    s3.put(str(weights["lpips"]), "evaluation/lpips.pth")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "input": {"uri": "s3://evaluation/faces/", "shard_size": 2},
        "model": {"checkpoint": "s3://evaluation/e2style.pt"},
        "output": {"uri": "s3://evaluation/scores/"},
        "metrics": {"compute": ["psnr", "lpips"], "lpips": {"weights": "s3://evaluation/lpips.pth", "net": "alex"}},
        "evaluate": {"best_worst": 1},
        "resources": {"batch_size": 2},
        "storage_options": {"s3": options},
    }))
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_OK
    rows = read_rows("s3://evaluation/scores/", options)
    assert rows["key"] == keys and rows["engine"] == ["torch float32"] * 3
    report = json.loads(s3.cat_file("evaluation/scores/_report.json"))
    lpips = report["metric_networks"]["lpips"]
    assert lpips == {"network": "lpips-alex", "sha256": checkpoint_sha256(str(weights["lpips"])), "weights": "s3://evaluation/lpips.pth"}
    mean = report["results"]["torch float32"]["stages"]["stage2"]["lpips"]["mean"]
    assert mean == pytest.approx(np.mean(rows["lpips_stage2"]), rel=1e-12)
    assert report["best_worst"]["psnr"]["best"][0]["key"] == keys[int(np.argmax(rows["psnr_stage2"]))]
    assert s3.exists("evaluation/scores/_best_worst.png") and s3.exists("evaluation/scores/_report.png")
    assert evaluate.main([str(spec), "--verify"]) == EXIT_OK

    # Other weights under the same name: the output's scores are not theirs, so it is not resumed.
    other = tmp_path / "other-lpips.pth"
    write_random_metric_weights("lpips", str(other), seed=99)
    s3.put(str(other), "evaluation/lpips.pth")
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_BAD_SPEC
    error = capsys.readouterr().err
    assert "s3://evaluation/scores/ holds output that this spec would make differently" in error
    assert "evaluation.networks.lpips.sha256" in error and checkpoint_sha256(str(other)) in error


def lpips_with_a_misshaped_head(path: Path) -> Path:
    state = random_metric_weights("lpips", seed=1)
    state["lin2.model.1.weight"] = torch.zeros(1, 383, 1, 1)
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "sections,message",
    [
        ({"metrics": {"compute": ["psnr", "lpips"]}},
         r"metrics\.lpips\.weights: lpips is in metrics\.compute but no weights are given; set it to the published "
         r"file \(\[alexnet-owt-7be5be79\.pth, alex\.pth\] .*\) or remove lpips from metrics\.compute"),
        ({}, r"metrics\.compute: ms_ssim needs images of at least 176 px \(5 scales of 11x11 windows\), and the model's "
             r"are 32 px; remove ms_ssim from metrics\.compute"),
        ({"metrics": {"compute": ["psnr", "identity"]}}, r"metrics\.identity\.weights: identity is in metrics\.compute"),
        ({"metrics": {"compute": ["psnr", "lpips"], "lpips": {"weights": "{misshaped}"}}},
         r"metrics\.lpips\.weights: LPIPS \(AlexNet\) weights .*lpips-bad\.pth do not match the network: 1 mis-shaped "
         r"key\(s\): lin2\.model\.1\.weight is \[1, 383, 1, 1\] float32 in .*, \[1, 384, 1, 1\] float32 in the network"),
        ({"metrics": {"compute": ["psnr", "lpips"], "lpips": {"weights": "{missing}"}}},
         r"metrics\.lpips\.weights: LPIPS weights: checkpoint .*nowhere\.pth does not exist"),
        ({"metrics": {"compute": ["psnr"]}, "evaluate": {"stages": [1, 3]}},
         r"evaluate\.stages: stage 3 asked for, but the model runs 2 stages"),
        ({"metrics": {"compute": ["psnr"]}, "evaluate": {"precisions": ["float32"]}},
         r"evaluate\.precisions: float32 is the job's engine precision"),
        ({"metrics": {"compute": ["psnr", "psnr"]}}, r"metrics\.compute: Value error, psnr named more than once"),
        ({"metrics": {"compute": ["psnr", "fid"], "fid": {"weights": ["a.pth", "b.pth"]}}},
         r"metrics\.fid\.weights: Input should be a valid string"),
    ],
)
def test_bad_specs_and_weight_files_are_refused_before_any_work(checkpoint, tmp_path, capsys, sections, message):
    make_image_folder(tmp_path / "in", good=1)
    lpips = sections.get("metrics", {}).get("lpips")
    if lpips:
        bad = {"{misshaped}": str(lpips_with_a_misshaped_head(tmp_path / "lpips-bad.pth")),
               "{missing}": str(tmp_path / "nowhere.pth")}
        sections = {**sections, "metrics": {**sections["metrics"], "lpips": {"weights": bad[lpips["weights"]]}}}
    spec = write_spec(tmp_path / "s.yaml", tmp_path / "in", tmp_path / "out", checkpoint, **sections)
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_BAD_SPEC
    error = capsys.readouterr().err
    assert any(re.search(message, line) for line in error.splitlines()), error
    assert not (tmp_path / "out").exists()


def test_a_restoration_checkpoint_is_refused(tmp_path, capsys):
    colorization = write_official(make_e2style(stages=1, seed=3), tmp_path / "color.pt", task="ffhq_colorization")
    make_image_folder(tmp_path / "in", good=1)
    spec = write_spec(tmp_path / "s.yaml", tmp_path / "in", tmp_path / "out", colorization, metrics={"compute": ["psnr"]})
    assert evaluate.main([str(spec), "--no-progress"]) == EXIT_BAD_SPEC
    assert "was trained for colorization" in capsys.readouterr().err


class FakeClockEngine:
    """An engine whose graphs take known times on a clock the model step reads."""

    def __init__(self, stages: int, cost: dict[str, float]):
        self.stages, self.device, self.now = stages, torch.device("cpu"), 0.0
        self.runners = {name: self._runner(name, cost[name.rstrip("0123456789") if name != "stage1" else name]) for name in
                        ["stage1", *(f"stage{k}" for k in range(2, stages + 1)), "synthesis"]}

    def _runner(self, name: str, seconds: float):
        def run(**inputs):
            self.now += seconds
            return torch.zeros(1, 3, 2, 2) if name == "synthesis" else torch.ones(1, 2, 2)
        return run


def test_a_stage_counts_its_codes_and_the_rendering_of_its_reconstruction(monkeypatch):
    engine = FakeClockEngine(3, {"stage1": 1.0, "stage": 10.0, "synthesis": 100.0})
    monkeypatch.setattr(model_step.time, "perf_counter", lambda: engine.now)
    codes, renders, seconds = timed_stages(engine, torch.zeros(1, 3, 2, 2), (1, 2, 3))
    # A k-stage model: stage 1, then per refinement its input's rendering and its encoder, then its own rendering.
    assert seconds == {1: 101.0, 2: 211.0, 3: 321.0}
    assert len(codes) == 3 and sorted(renders) == [1, 2, 3]
    _, _, seconds = timed_stages(engine, torch.zeros(1, 3, 2, 2), (2,))
    assert seconds == {2: 211.0}


def test_ms_ssim_of_the_model_step_on_a_256_px_model(tmp_path, one_thread):
    tiny = get_preset("tiny-64")
    config = dataclasses.replace(
        tiny, stages=1, image_size=256,
        encoder=dataclasses.replace(tiny.encoder, head_codes=(6, 4, 4)),
        generator=dataclasses.replace(tiny.generator, resolution=256),
    )
    model = randomize_(E2Style(config), seed=4).eval()
    path = tmp_path / "m256.pt"
    torch.save(official_checkpoint(model), path)
    engine = build_engine(str(path), EngineOptions(max_batch=2), config=config, gate=False)
    images = np.stack([np.asarray(Image.open(io.BytesIO(png_bytes(i, size=256)))) for i in range(3)])
    step = EvaluateModel(("psnr", "ms_ssim"), (1,), (), (), str(path), {}, ("psnr",), 1)
    result = step(engine, images, 2)
    assert result.engines == ("torch float32",) and result.codes[0].shape == (3, 14, 32)
    for start in (0, 2):
        batch = images[start : start + 2]
        rendered = tensor_to_images(engine.synthesize(engine.invert(images_to_tensor(batch)))).numpy()
        want = ms_ssim(unit(batch), unit(rendered)).numpy()
        np.testing.assert_allclose(result.scores[0]["ms_ssim_stage1"][start : start + 2], want, rtol=0, atol=1e-12)
    # The pictures kept are those of the best and the worst by PSNR: input, then the stage's reconstruction.
    best, worst = np.argmax(result.scores[0]["psnr_stage1"]), np.argmin(result.scores[0]["psnr_stage1"])
    assert sorted(result.pictures) == sorted({int(best), int(worst)})
    np.testing.assert_array_equal(result.pictures[int(best)][0], images[best])


def test_the_best_and_worst_are_ranked_by_value_then_key_and_the_shortlist_keeps_ties():
    keys = ["e", "d", "c", "b", "a"]
    values = np.array([3.0, 1.0, np.nan, 3.0, 2.0])
    assert ranked(keys, values, 2) == (["e", "b"], ["d", "a"])
    assert sheet_records(keys, {"psnr_stage1": values}, ["psnr"], 1, 1) == ["d", "e"]
    # Whatever key breaks the tie at 3.0, both records are kept; NaN is never chosen.
    assert shortlist([values], 1).tolist() == [True, True, False, True, False]


def test_parts_of_a_shard_join_to_its_scores_and_keep_the_pictures_of_its_best_and_worst(checkpoint, tmp_path):
    from pipeline.core.payloads import part_of_rows
    from pipeline.evaluate.steps import join_evaluated

    engine = build_engine(str(checkpoint), EngineOptions(max_batch=2), gate=False)
    images = np.stack([np.asarray(Image.open(io.BytesIO(png_bytes(i)))) for i in range(7)])
    step = EvaluateModel(("psnr", "ssim"), (1, 2), (), (), str(checkpoint), {}, ("psnr",), 2)
    whole = step(engine, images, 2)
    joined = join_evaluated([step(engine, part_of_rows(images, i, 3, 2), 2) for i in range(3)])
    assert joined.engines == whole.engines and len(joined.devices) == 7
    np.testing.assert_array_equal(joined.codes[0], whole.codes[0])
    for column in ("psnr_stage1", "ssim_stage1", "psnr_stage2", "ssim_stage2"):
        np.testing.assert_array_equal(joined.scores[0][column], whole.scores[0][column])
    # Each part keeps its own best and worst: among them, those of the whole shard, pictures in place.
    keys = [f"k{i}" for i in range(7)]
    chosen = sheet_records(keys, whole.scores[0], ["psnr"], 2, 2)
    assert len(chosen) == 4 and len(whole.pictures) == 4
    for key in chosen:
        i = keys.index(key)
        for got, want in zip(joined.pictures[i], whole.pictures[i]):
            np.testing.assert_array_equal(got, want)
    empty = step(engine, images[:0], 2)
    assert empty.codes[0].shape == (0, 10, 32) and empty.scores[0]["psnr_stage2"].shape == (0,)
