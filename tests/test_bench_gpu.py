"""The GPU benchmark runs its own code on the CPU (tiny preset) in the suite, so it cannot rot."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gpu  # noqa: E402


def test_bench_gpu_measures_every_form_and_output_with_a_flop_count(tmp_path, capsys):
    rows = bench_gpu.main(["--stages", "1", "--precisions", "float32", "--batches", "1,2", "--repeats", "1",
                           "--json", str(tmp_path / "rows.json")])
    printed = capsys.readouterr().out
    assert printed.startswith("# CPU (")  # no GPU here: the CPU and the tiny preset
    assert "torch float32 batched, 1 stage(s): built in" in printed and "passed the accuracy gate" in printed
    assert "torch float32 grouped, 1 stage(s): built in" in printed and "the float32 reference (no gate)" in printed
    assert "torch float32 fused-folded, 1 stage(s): built in" in printed
    keys = {(r["what"], r["form"], r["batch"]) for r in rows}
    assert keys == {
        (what, form, batch)
        for what in ("generator -> 256 px", "latents", "latents + 256 px")
        for form in ("grouped", "batched", "folded", "fused", "fused-folded")
        for batch in (1, 2)
    }
    assert all(r["images_per_s"] > 0 and r["tflops"] > 0 for r in rows)
    by_form = {(r["what"], r["form"], r["batch"]): r for r in rows}
    # Work per image is the model's: the same for every batch size, and the folded form does more products.
    generator = [by_form[("generator -> 256 px", "grouped", b)] for b in (1, 2)]
    per_image = [r["tflops"] / r["images_per_s"] for r in generator]
    assert abs(per_image[0] - per_image[1]) < 1e-9 * per_image[0] + 1e-15
    folded = by_form[("generator -> 256 px", "folded", 1)]
    assert folded["tflops"] / folded["images_per_s"] > per_image[0]
    # The fused generator does the batched one's products, less the last ToRGB's work on the unpooled image.
    fused = by_form[("generator -> 256 px", "fused", 1)]
    assert 0.9 * per_image[0] < fused["tflops"] / fused["images_per_s"] < per_image[0]
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == rows


def test_the_flop_counter_counts_convolutions_and_products_under_inference_mode():
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    with torch.inference_mode(), bench_gpu.CountFlops() as counter:
        F.conv2d(x, w)
        x[0, 0] @ x[0, 0]
    assert counter.total == 2 * (4 * 3 * 9 * 6 * 6) + 2 * 8**3
