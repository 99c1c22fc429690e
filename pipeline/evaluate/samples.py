"""The evaluation sample's metric weights and spec sections (``python -m jobs.make_sample`` writes them).

The weights are untrained: seeded random values in the layouts of the published files
(``engines.metric_weights.random_metric_weights``), so the sample runs every network of the evaluation,
but its LPIPS, identity and FID numbers measure nothing. For real numbers, point ``metrics.*.weights``
at the published files (README: Evaluating a checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.metric_weights import write_random_metric_weights

SAMPLE_SEED = 0
SAMPLE_WEIGHTS = {  # metric -> file name under the sample's model folder
    "lpips": "untrained-lpips-alex.pth",
    "identity": "untrained-arcface-ir-se50.pth",
    "fid": "untrained-inception-v3-fid.pth",
}


def write_sample_metric_weights(model_dir: Path) -> list[Path]:
    """The sample's metric weights, skipping files already there; returns the new files."""
    written = []
    for i, (metric, name) in enumerate(SAMPLE_WEIGHTS.items()):
        path = model_dir / name
        if not path.exists():
            write_random_metric_weights(metric, str(path), seed=SAMPLE_SEED + i)
            written.append(path)
    return written


def sample_sections(model_dir: Path) -> dict[str, Any]:
    """The sample spec's ``metrics`` and ``evaluate``: every metric the sample model's 32 px images allow
    (MS-SSIM needs 176 px), its engine compared with bfloat16, and the edits of the edit sample's direction
    (``direction.npy``, which ``make_sample`` writes beside the models) scored."""
    weights = {metric: {"weights": str(model_dir / name)} for metric, name in SAMPLE_WEIGHTS.items()}
    edit = {"direction": str(model_dir / "direction.npy"), "strengths": [-6, 0, 6]}
    return {
        "metrics": {"compute": ["psnr", "ssim", "l2", "lpips", "identity", "fid"], **weights},
        "evaluate": {"precisions": ["bfloat16"], "best_worst": 3, "edit": edit},
    }
