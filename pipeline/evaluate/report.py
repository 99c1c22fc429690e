"""The evaluation's report, written once every shard is committed (``JobKind.finish``), from the committed
shards alone, so a resumed run writes the same report as one that never stopped:

    _report.json     per engine and scored stage: count, mean, standard deviation, median, 5th and 95th
                     percentile of each metric and of the seconds per image; FID; parameters; the
                     checkpoint, the metric networks, the devices, the number of images; with
                     ``evaluate.edit``, per strength the edits' FID and identity similarity statistics
    _report.md       the same as tables (the paper's Table I layout: a row per stage count; Table II's for
                     the edits: a row per strength)
    _report.png      each metric across stages (mean, 5th-95th percentile band) and its distribution per
                     stage; identity and FID of the edits across strengths
    _best_worst.png  the best and worst records by identity similarity and by PSNR at the last scored stage

Only the score columns are read (not the codes); FID merges each shard's feature statistics
(``operators.metric_nets.FeatureStatistics``), which equals one pass over every feature.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from operators.metric_nets import FeatureStatistics, fids_from_statistics
from pipeline.core.job import Plan
from pipeline.core.payloads import ShardStats
from pipeline.core.report import counted
from pipeline.core.secrets import redact_uri
from pipeline.core.storage import join, write_atomically
from pipeline.core.store import PREVIEW_GAP, PREVIEW_TILE, OutputStore
from pipeline.evaluate.steps import (
    RANKINGS, edit_column, feature_column, job_engine_rows, preview_pictures, ranked, score_column,
    seconds_column, sheet_records,
)

REPORT_FILES = ("_report.json", "_report.md", "_report.png", "_best_worst.png")
READERS = 4  # shards read at once (each holds 32 MiB of statistics per feature column)
LABELS = {
    "psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "l2": "L2 (MSE on [0, 1])", "lpips": "LPIPS",
    "identity": "identity similarity", "seconds": "seconds per image", "fid": "FID",
}
HIGHER_IS_BETTER = {"psnr", "ssim", "ms_ssim", "identity"}


def _number(value: float) -> float | None:
    """A JSON number, or null for inf and NaN (an identical reconstruction's PSNR, say)."""
    return float(value) if np.isfinite(value) else None


def summary(values: np.ndarray) -> dict[str, Any]:
    """count, mean, std (of the values themselves, numpy's default), median, p5, p95 (linear interpolation)."""
    if not len(values):
        return {"count": 0}
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    stats = {"mean": values.mean(), "std": values.std(), "median": median, "p5": p5, "p95": p95}
    return {"count": int(len(values)), **{k: _number(v) for k, v in stats.items()}}


def _read_shard(
    store: OutputStore, shard: str, scores: list[str], features: list[str], engine: str, per_engine: set[str]
) -> tuple[pa.Table, dict]:
    """A shard's score columns, and the feature statistics of the ``per_engine`` columns (the stages'
    reconstructions) for each of its engines, and of the others (the input, the edits) for the job's
    ``engine`` alone: every engine's rows hold the same input features, and only the job's are edited."""
    with store.fs.open(store.data_path(shard), "rb") as f:
        table = pq.read_table(f, columns=["key", "engine", "device", *scores, *features])
    engines = np.asarray(table.column("engine").to_pylist(), dtype=object)
    statistics = {}
    for column in features:
        chunks = table.column(column).chunks
        width = table.schema.field(column).type.list_size
        values = np.concatenate([c.flatten().to_numpy() for c in chunks]) if chunks else np.zeros(0, np.float32)
        values = values.reshape(-1, width)
        for name in dict.fromkeys(engines) if column in per_engine else [engine]:
            statistics[(name, column)] = FeatureStatistics.of(torch.from_numpy(values[engines == name]))
    return table.drop_columns(features), statistics


def read_scores(
    store: OutputStore, stats: list[ShardStats], scores: list[str], features: list[str], engine: str,
    per_engine: set[str],
):
    """Every committed shard's score columns (in shard order, with the shard of each row) and the feature
    statistics merged over the shards, by (engine, column) (``_read_shard``)."""
    tables, merged = [], {}
    with ThreadPoolExecutor(READERS) as pool:
        for start in range(0, len(stats), READERS):  # a window at a time, merged as it comes
            window = stats[start : start + READERS]
            read = pool.map(lambda s: _read_shard(store, s.shard, scores, features, engine, per_engine), window)
            for s, (table, statistics) in zip(window, read):
                tables.append(table.append_column("shard", pa.array([s.shard] * table.num_rows, pa.string())))
                for key, value in statistics.items():
                    merged[key] = merged[key] + value if key in merged else value
    return pa.concat_tables(tables), merged


def build_report(plan: Plan, stats: list[ShardStats], rows: pa.Table, statistics: dict) -> dict[str, Any]:
    provenance = plan.provenance
    evaluation = provenance.job_fields["evaluation"]
    parameters = provenance.job_fields["parameters"]
    stages, metrics = evaluation["stages"], evaluation["metrics"]
    scalar = [m for m in metrics if m != "fid"]
    engines = list(dict.fromkeys(rows.column("engine").to_pylist())) or [provenance.engine]
    engine_column = np.asarray(rows.column("engine").to_pylist(), dtype=object)
    edit = evaluation.get("edit")
    fids = {}
    reference = statistics.get((provenance.engine, feature_column(None)))
    if reference is not None and reference.count > 1:  # a covariance needs 2 images
        # Every engine's rows hold the same input features: one reference serves them all.
        pairs = [(engine, feature_column(k)) for engine in engines for k in stages]
        if edit is not None:
            pairs += [(provenance.engine, edit_column("fid", i)) for i in range(len(edit["strengths"]))]
        fids = dict(zip(pairs, map(_number, fids_from_statistics(reference, [statistics[p] for p in pairs]))))
    results = {}
    for engine in engines:
        mine = engine_column == engine
        per_stage = {}
        for k in stages:
            entry: dict[str, Any] = {
                "encoder_parameters": sum(parameters["encoder_run"][:k]),
                **{m: summary(rows.column(score_column(m, k)).to_numpy()[mine]) for m in scalar},
                "seconds": summary(rows.column(seconds_column(k)).to_numpy()[mine]),
            }
            if "fid" in metrics:
                entry["fid"] = fids.get((engine, feature_column(k)))
            per_stage[f"stage{k}"] = entry
        results[engine] = {"images": int(mine.sum()), "stages": per_stage}
    networks = plan.spec.metrics
    return {
        "job": provenance.job,
        "checkpoint": provenance.checkpoint,
        "checkpoint_sha256": provenance.checkpoint_sha256,
        "model_stages": provenance.stages,
        "image_size": provenance.image_size,
        "images": sum(s.written for s in stats),
        "rejected": sum(s.rejected for s in stats),
        "metrics": metrics,
        "stages": stages,
        "engine": provenance.engine,
        "engines": engines,
        "metric_networks": {
            metric: {**found, "weights": _redacted(getattr(networks, metric).weights)}
            for metric, found in evaluation["networks"].items()
        },
        "parameters": parameters,
        "devices": dict(sorted(Counter(rows.column("device").to_pylist()).items())),
        "results": results,
        "editing": editing(plan, rows, fids),
        "best_worst": best_and_worst(rows, provenance.engine, metrics, stages[-1], evaluation["best_worst"]),
    }


def editing(plan: Plan, rows: pa.Table, fids: dict) -> dict[str, Any] | None:
    """Per strength of ``evaluate.edit`` (the paper's Table II): FID between the inputs and the edited
    images over the whole set, and the summary of each edited image's identity similarity to its input."""
    provenance = plan.provenance
    evaluation = provenance.job_fields["evaluation"]
    edit = evaluation.get("edit")
    if edit is None:
        return None
    metrics, engine = evaluation["metrics"], provenance.engine
    mine = np.asarray(rows.column("engine").to_pylist(), dtype=object) == engine
    per_strength = []
    for i, strength in enumerate(edit["strengths"]):
        columns = [edit_column(m, i) for m in ("identity", "fid") if m in metrics]
        entry: dict[str, Any] = {"strength": strength, "columns": columns}
        if "identity" in metrics:
            entry["identity"] = summary(rows.column(edit_column("identity", i)).to_numpy()[mine])
        if "fid" in metrics:
            entry["fid"] = fids.get((engine, edit_column("fid", i)))
        per_strength.append(entry)
    return {
        "direction": redact_uri(plan.spec.evaluate.edit.direction),
        "direction_sha256": edit["direction_sha256"],
        "layers": edit["layers"],
        "stage": evaluation["stages"][-1],
        "engine": engine,
        "strengths": per_strength,
    }


def _redacted(weights: str | list[str]) -> str | list[str]:
    return redact_uri(weights) if isinstance(weights, str) else [redact_uri(w) for w in weights]


def best_and_worst(rows: pa.Table, engine: str, metrics: list[str], stage: int, count: int) -> dict[str, Any]:
    """The job's engine's best and worst records of the whole output by each ranking metric at ``stage``,
    with the shard whose preview holds each one's pictures."""
    rankings = [m for m in RANKINGS if m in metrics]
    if not count or not rankings:
        return {}
    keys, columns = job_engine_rows(rows, engine, [score_column(m, stage) for m in rankings])
    if not keys:
        return {}
    mine = np.asarray(rows.column("engine").to_pylist(), dtype=object) == engine
    shard_of = dict(zip(keys, np.asarray(rows.column("shard").to_pylist(), dtype=object)[mine]))
    out = {}
    for metric in rankings:
        values = columns[score_column(metric, stage)]
        value_of = dict(zip(keys, values))
        best, worst = ranked(keys, values, count)
        if not best:  # every value NaN
            continue
        out[metric] = {
            "stage": stage,
            **{side: [{"key": k, "value": _number(value_of[k]), "shard": shard_of[k]} for k in chosen]
               for side, chosen in (("best", best), ("worst", worst))},
        }
    return out


def _format(metric: str, stats: dict[str, Any], field: str = "mean") -> str:
    value = stats.get(field)
    if value is None:
        return "-"
    return f"{value:.4g}" if metric == "seconds" else f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def _millions(count: int) -> str:
    return f"{count / 1e6:.3g}"


def markdown(report: dict[str, Any]) -> str:
    metrics = [m for m in report["metrics"] if m != "fid"]
    has_fid = "fid" in report["metrics"]
    arrows = {m: "↑" if m in HIGHER_IS_BETTER else "↓" for m in (*metrics, "fid")}
    lines = [
        f"# Evaluation of {report['checkpoint']}",
        "",
        f"- checkpoint: `{report['checkpoint']}`, sha256 `{report['checkpoint_sha256']}`; "
        f"{counted(report['model_stages'], 'stage')}, {report['image_size']} px",
        f"- images: {report['images']} evaluated, {report['rejected']} rejected"
        + (" (see `_rejects/`)" if report["rejected"] else ""),
        f"- engines: {', '.join(report['engines'])} (the job's engine: {report['engine']})",
        f"- devices: {', '.join(f'{d} ({n} rows)' for d, n in report['devices'].items())}",
        f"- parameters: generator {_millions(report['parameters']['generator'])}M; each stage's encoder "
        f"{', '.join(_millions(p) + 'M' for p in report['parameters']['encoder_run'])} (run; stored: "
        f"{', '.join(_millions(p) + 'M' for p in report['parameters']['encoder_stored'])})",
    ]
    for metric, found in report["metric_networks"].items():
        lines.append(f"- {LABELS[metric]}: {found['network']}, sha256 `{found['sha256']}`")
    lines += ["", "## Mean ± standard deviation per stage count", ""]
    for engine, result in report["results"].items():
        header = ["stages", *(f"{LABELS[m]} {arrows[m]}" for m in metrics), *(["FID ↓"] if has_fid else []),
                  "seconds per image (median)", "encoder parameters (M)"]
        lines += [f"### {engine} ({result['images']} images)", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        for name, entry in result["stages"].items():
            cells = [name.removeprefix("stage")]
            cells += [f"{_format(m, entry[m])} ± {_format(m, entry[m], 'std')}" for m in metrics]
            if has_fid:
                cells.append("-" if entry["fid"] is None else f"{entry['fid']:.2f}")
            cells += [_format("seconds", entry["seconds"], "median"), _millions(entry["encoder_parameters"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if report["editing"]:
        lines += editing_markdown(report)
    lines += [
        "## Distributions", "",
        "| engine | stages | metric | median | 5th percentile | 95th percentile | count |", "|---|---|---|---|---|---|---|",
    ]
    for engine, result in report["results"].items():
        for name, entry in result["stages"].items():
            for m in (*metrics, "seconds"):
                s = entry[m]
                lines.append(f"| {engine} | {name.removeprefix('stage')} | {LABELS[m]} | {_format(m, s, 'median')} | "
                             f"{_format(m, s, 'p5')} | {_format(m, s, 'p95')} | {s['count']} |")
    lines += [
        "",
        "Seconds per image: a model of that many stages making its codes and its reconstruction, per image of a batch, "
        "timed in the actors with the device synchronised (the first batch of each engine runs once untimed first).",
        "",
        "![Metrics across stages](_report.png)",
        "",
    ]
    if report["best_worst"]:
        lines += ["![Best and worst records](_best_worst.png)", ""]
    return "\n".join(lines)


def editing_markdown(report: dict[str, Any]) -> list[str]:
    edit = report["editing"]
    has_identity, has_fid = "identity" in report["metrics"], "fid" in report["metrics"]
    header = ["strength", *(["FID ↓"] if has_fid else [])]
    if has_identity:
        header += ["identity similarity ↑", "median", "5th percentile", "95th percentile"]
    header.append("Parquet columns")
    lines = [
        "## Editing quality", "",
        f"The codes of stage {edit['stage']} ({edit['engine']}) moved along `{edit['direction']}` (sha256 "
        f"`{edit['direction_sha256']}`) on W+ layers {_runs(edit['layers'])} by each strength, "
        "rendered, and scored against the inputs (the paper's Table II); strength 0 is the reconstruction itself.",
        "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
    ]
    for entry in edit["strengths"]:
        cells = [f"{entry['strength']:g}"]
        if has_fid:
            cells.append("-" if entry["fid"] is None else f"{entry['fid']:.2f}")
        if has_identity:
            s = entry["identity"]
            cells += [f"{_format('identity', s)} ± {_format('identity', s, 'std')}",
                      *(_format("identity", s, field) for field in ("median", "p5", "p95"))]
        cells.append(", ".join(f"`{c}`" for c in entry["columns"]))
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _runs(numbers: list[int]) -> str:
    """Sorted numbers with each run of consecutive ones as first-last: [0, 1, 2, 3, 9] -> '0-3, 9'."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def charts(report: dict[str, Any], rows: pa.Table) -> bytes:
    """Per metric: the mean across stages per engine with its 5th-95th percentile band, and the job's
    engine's distribution per stage (box: quartiles, whiskers: 5th and 95th percentile)."""
    metrics = report["metrics"]
    panels = [m for m in metrics if m != "fid"] + ["seconds"] + (["fid"] if "fid" in metrics else [])
    stages = report["stages"]
    edit_panels = [m for m in ("identity", "fid") if m in metrics] if report["editing"] else []
    figure = Figure(figsize=(3.2 * len(panels), 3.2 * (2 + bool(edit_panels))), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2 + bool(edit_panels), len(panels), squeeze=False)
    if edit_panels:
        for col, ax in enumerate(axes[2]):
            if col < len(edit_panels):
                _edit_chart(ax, report["editing"], edit_panels[col])
            else:
                ax.axis("off")
    engine_column = np.asarray(rows.column("engine").to_pylist(), dtype=object)
    for col, metric in enumerate(panels):
        top, bottom = axes[0][col], axes[1][col]
        for engine, result in report["results"].items():
            entries = [result["stages"][f"stage{k}"] for k in stages]
            if metric == "fid":
                top.plot(stages, [np.nan if e["fid"] is None else e["fid"] for e in entries], marker="o", label=engine)
                continue
            mean = [np.nan if e[metric].get("mean") is None else e[metric]["mean"] for e in entries]
            low = [np.nan if e[metric].get("p5") is None else e[metric]["p5"] for e in entries]
            high = [np.nan if e[metric].get("p95") is None else e[metric]["p95"] for e in entries]
            line = top.plot(stages, mean, marker="o", label=engine)[0]
            top.fill_between(stages, low, high, color=line.get_color(), alpha=0.2)
        better = "higher" if metric in HIGHER_IS_BETTER else "lower"
        top.set_title(f"{LABELS[metric]} ({better} is better)", fontsize=9)
        top.set_xlabel("stages")
        top.set_xticks(stages)
        if col == 0:
            top.legend(fontsize=7)
        if metric == "fid":
            bottom.axis("off")
            bottom.text(0.5, 0.5, "FID is one number\nfor the whole set", ha="center", va="center", fontsize=9)
            continue
        mine = engine_column == report["engine"]
        column = (lambda k: seconds_column(k)) if metric == "seconds" else (lambda k: score_column(metric, k))
        data = [rows.column(column(k)).to_numpy()[mine] for k in stages]
        data = [d[np.isfinite(d)] for d in data]
        bottom.boxplot(data, tick_labels=[str(k) for k in stages], whis=(5, 95), showfliers=False)
        bottom.set_title(f"{report['engine']}: per image", fontsize=9)
        bottom.set_xlabel("stages")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _edit_chart(ax, edit: dict[str, Any], metric: str) -> None:
    """``metric`` of the edits across strengths: identity's mean with its 5th-95th percentile band, or FID."""
    entries = sorted(edit["strengths"], key=lambda e: e["strength"])
    strengths = [e["strength"] for e in entries]
    if metric == "fid":
        ax.plot(strengths, [np.nan if e["fid"] is None else e["fid"] for e in entries], marker="o")
    else:
        value = lambda e, field: np.nan if e["identity"].get(field) is None else e["identity"][field]  # noqa: E731
        line = ax.plot(strengths, [value(e, "mean") for e in entries], marker="o")[0]
        low, high = [value(e, "p5") for e in entries], [value(e, "p95") for e in entries]
        ax.fill_between(strengths, low, high, color=line.get_color(), alpha=0.2)
    better = "higher" if metric in HIGHER_IS_BETTER else "lower"
    ax.set_title(f"edits: {LABELS[metric]} to the input ({better} is better)", fontsize=9)
    ax.set_xlabel(f"strength (stage {edit['stage']}, {edit['engine']})")
    if len(strengths) <= 12:  # more would overlap
        ax.set_xticks(strengths)


LABEL_WIDTH, TITLE_HEIGHT, HEADER_HEIGHT = 220, 24, 18


def best_worst_sheet(
    report: dict[str, Any], store: OutputStore, rows: pa.Table, stats: list[ShardStats], count: int
) -> bytes:
    """The best and worst records by each ranking metric: a row each, its key and value beside its input
    and each scored stage's reconstruction, tiles cut from the shards' previews (which hold each shard's
    ``count`` best and worst)."""
    evaluation_stages, engine = report["stages"], report["engine"]
    rankings = [m for m in RANKINGS if m in report["metrics"]]  # as the write step chose each shard's
    preview_counts = {s.shard: s.preview_rows or 0 for s in stats}
    tiles: dict[str, list[np.ndarray]] = {}
    listed = [item for entry in report["best_worst"].values() for side in ("best", "worst") for item in entry[side]]
    wanted = {item["shard"] for item in listed}
    shard_column = np.asarray(rows.column("shard").to_pylist(), dtype=object)
    for shard in sorted(wanted):
        mine = rows.filter(pa.array(shard_column == shard))
        keys, columns = job_engine_rows(mine, engine, [score_column(m, evaluation_stages[-1]) for m in rankings])
        chosen = sheet_records(keys, columns, rankings, evaluation_stages[-1], count)
        if len(chosen) != preview_counts[shard]:
            raise RuntimeError(f"{shard}'s preview holds {preview_counts[shard]} records; its rows choose {len(chosen)}")
        preview = store.fs.cat_file(store.preview_path(shard))
        pictures = preview_pictures(preview, len(chosen), 1 + len(evaluation_stages))
        tiles.update(zip(chosen, pictures))

    font = ImageFont.load_default(size=13)
    step = PREVIEW_TILE + PREVIEW_GAP
    columns = ["input", *(f"stage {k}" for k in evaluation_stages)]
    sections = [(metric, side) for metric in report["best_worst"] for side in ("best", "worst")]
    width = LABEL_WIDTH + len(columns) * step + PREVIEW_GAP
    rows_of = {(m, side): len(report["best_worst"][m][side]) for m, side in sections}
    height = PREVIEW_GAP + sum(TITLE_HEIGHT + HEADER_HEIGHT + n * step for n in rows_of.values())
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    top = 0
    for metric, side in sections:
        entry = report["best_worst"][metric]
        items = entry[side]
        title = f"{side.capitalize()} {len(items)} by {LABELS[metric]} at stage {entry['stage']} ({engine})"
        draw.text((PREVIEW_GAP, top + 5), title, fill="black", font=font)
        top += TITLE_HEIGHT
        for j, name in enumerate(columns):
            draw.text((LABEL_WIDTH + j * step + PREVIEW_GAP, top + 2), name, fill="dimgray", font=font)
        top += HEADER_HEIGHT
        for item in items:
            label = _fit(draw, item["key"], font, LABEL_WIDTH - 2 * PREVIEW_GAP)
            value = "-" if item["value"] is None else f"{item['value']:.4f}"
            draw.text((PREVIEW_GAP, top + 4), label, fill="black", font=font)
            draw.text((PREVIEW_GAP, top + 22), f"{LABELS[metric]}: {value}", fill="black", font=font)
            for j, tile in enumerate(tiles[item["key"]]):
                sheet.paste(Image.fromarray(tile), (LABEL_WIDTH + j * step + PREVIEW_GAP, top))
            top += step
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, its start cut off (the end of a key names the file) until it fits ``width`` pixels."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = "…" + text[2:]
    return text


def write_report(plan: Plan, stats: list[ShardStats]) -> None:
    store = plan.store
    evaluation = plan.provenance.job_fields["evaluation"]
    metrics, stages = evaluation["metrics"], evaluation["stages"]
    scores = [
        name for k in stages for name in [*(score_column(m, k) for m in metrics if m != "fid"), seconds_column(k)]
    ]
    features = [feature_column(s) for s in (None, *stages)] if "fid" in metrics else []
    if "edit" in evaluation:
        edits = range(len(evaluation["edit"]["strengths"]))
        scores += [edit_column("identity", i) for i in edits] if "identity" in metrics else []
        features += [edit_column("fid", i) for i in edits] if "fid" in metrics else []
    per_engine = {feature_column(k) for k in stages}
    rows, statistics = read_scores(store, stats, scores, features, plan.provenance.engine, per_engine)
    report = build_report(plan, stats, rows, statistics)
    outputs = {
        "_report.json": json.dumps(report, indent=2, ensure_ascii=False).encode(),
        "_report.md": markdown(report).encode(),
        "_report.png": charts(report, rows),
    }
    if report["best_worst"]:
        outputs["_best_worst.png"] = best_worst_sheet(report, store, rows, stats, evaluation["best_worst"])
    for name, data in outputs.items():
        write_atomically(store.fs, join(store.root, name), lambda f, data=data: f.write(data), store.tmp_dir)
