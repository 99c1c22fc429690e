"""Outputs read back with the tools users read Parquet with, each as the README shows it (at most two
lines to an [N, num_ws, style_dim] array), and outputs of the layout before (fixed_shape_tensor latents,
images under images/) still read, verified, resumed, retried, edited from and cleaned up by the job."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from helpers import make_image_folder, png_bytes
from factories import make_e2style, write_official
from jobs import edit, invert_dataset
from jobs.cli import EXIT_OK
from pipeline.core.store import LATENT_COLUMN, OutputStore, latent_codes, latent_table, latent_type, with_latent_type

NUM_WS, STYLE_DIM = 18, 512
SHARDS = {"shard-00000": ["a/0.png", "a/1.png", "b/2.png"], "shard-00001": ["c/3.png", "c/4.png"]}
ROOT = Path(__file__).resolve().parents[2]
READERS = ["pyarrow", "Ray Data", "pandas", "polars", "DuckDB", "Hugging Face"]  # as the README labels them


def codes(n: int, seed: int) -> np.ndarray:
    """float32 W+ codes, almost none of them a float16 value: a reader that rounds shows."""
    return (np.random.default_rng(seed).standard_normal((n, NUM_WS, STYLE_DIM)) * 3).astype(np.float32)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """dtype -> (an output of two shards, one with a reject, as the job commits them; key -> its codes as stored)."""
    made = {}
    for dtype in ("float32", "float16"):
        out = tmp_path_factory.mktemp(dtype) / "latents"
        store = OutputStore(str(out), {})
        store.write_job({"job": "inversion", "num_ws": NUM_WS, "style_dim": STYLE_DIM})
        expected = {}
        for i, (shard, keys) in enumerate(SHARDS.items()):
            values = codes(len(keys), seed=i)
            table = latent_table(keys, [f"file:///in/{k}" for k in keys], values, {"shard": shard}, dtype)
            rejects = [("bad.png", "file:///in/bad.png", "cannot decode image")] if i == 0 else []
            store.write_shard(shard, table, rejects, 2, time.time(), {"inputs": keys})
            expected.update(zip(keys, values.astype(dtype)))
        store.write_manifest({"job": "inversion"}, list(store.committed().values()))
        made[dtype] = (str(out), expected)
    return made


def check(keys, w_plus: np.ndarray, expected: dict[str, np.ndarray], dtype: np.dtype) -> None:
    """The reader gave every record once, [N, 18, 512] in ``dtype``, with exactly the stored values."""
    assert sorted(keys) == sorted(expected)
    assert w_plus.shape == (len(expected), NUM_WS, STYLE_DIM) and w_plus.dtype == dtype
    stored = np.stack([expected[k] for k in keys])
    np.testing.assert_array_equal(w_plus, stored.astype(dtype))
    np.testing.assert_array_equal(w_plus.astype(stored.dtype), stored)  # a widened float16 is still exact


def readme_readers() -> tuple[str, dict[str, str]]:
    """The README's snippets for reading the latents: (its import line, reader -> its lines)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("**Reading the latents.**", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    imports, *groups = block.strip().split("\n\n")
    return imports, {group.splitlines()[0].rsplit("#", 1)[1].strip(): group for group in groups}


def run_reader(name: str, uri: str) -> tuple[list[str], np.ndarray]:
    """Run the README's lines for ``name`` on ``uri``: the keys of the rows it read, and its ``w_plus``."""
    import duckdb
    import pandas as pd
    import polars as pl
    import ray

    scope = {"uri": uri, "np": np, "pa": pa, "pq": pq, "pd": pd, "pl": pl, "duckdb": duckdb, "ray": ray}
    exec(readme_readers()[1][name], scope)
    rows = scope.get("table", scope.get("df"))
    return [k.as_py() if isinstance(k, pa.Scalar) else k for k in rows["key"]], scope["w_plus"]


def test_the_readme_shows_each_reader_in_at_most_two_lines():
    imports, readers = readme_readers()
    assert list(readers) == READERS
    assert all(len(lines.splitlines()) <= 2 for lines in readers.values()), readers
    assert imports.startswith("import ") and "\n" not in imports


# float16 latents as each reader gives them: DuckDB has no 2-byte float, datasets' numpy format widens floats.
FLOAT16_AS = {"DuckDB": np.float32, "Hugging Face": np.float32}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("reader", ["pyarrow", "pandas", "polars", "DuckDB"])
def test_each_reader_gets_the_exact_codes_with_their_shape(outputs, reader, dtype):
    uri, expected = outputs[dtype]
    keys, w_plus = run_reader(reader, uri)
    check(keys, w_plus, expected, np.dtype(FLOAT16_AS.get(reader, np.float16) if dtype == "float16" else np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_ray_data_gets_the_exact_codes_with_their_shape(ray_local, outputs, dtype):
    uri, expected = outputs[dtype]
    keys, w_plus = run_reader("Ray Data", uri)
    check(keys, w_plus, expected, np.dtype(dtype))


def test_hugging_face_datasets_gets_the_exact_codes_with_their_shape(outputs, tmp_path):
    """In a process of its own, as a user's script runs the README's import line and reader."""
    imports, readers = readme_readers()
    script = f"{imports}\nimport sys\nREADER = {readers['Hugging Face']!r}\n" + (
        "for name, uri in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    exec(READER)\n"
        "    halves = ds.with_format('numpy', dtype=np.float16)['w_plus'][:]\n"
        "    np.savez(name, keys=np.array(ds['key'][:]), w_plus=w_plus, halves=halves)\n"
    )
    args = [a for dtype, (uri, _) in outputs.items() for a in (str(tmp_path / f"{dtype}.npz"), uri)]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for dtype, (_, expected) in outputs.items():
        read = np.load(tmp_path / f"{dtype}.npz")
        check(read["keys"].tolist(), read["w_plus"], expected, np.dtype(np.float32))
        if dtype == "float16":  # as the README says: asked for, float16 stays float16
            check(read["keys"].tolist(), read["halves"], expected, np.dtype(np.float16))


def test_the_project_reads_both_layouts_and_keeps_an_outputs_latent_type(outputs, tmp_path):
    uri, expected = outputs["float16"]
    store = OutputStore(uri, {})
    table = store.read_latents("shard-00001")
    np.testing.assert_array_equal(latent_codes(table), np.stack([expected[k] for k in SHARDS["shard-00001"]]))
    tensor = pa.fixed_shape_tensor(pa.float16(), (NUM_WS, STYLE_DIM))
    legacy = with_latent_type(table, tensor)
    assert legacy.schema.field(LATENT_COLUMN).type == tensor and legacy.schema.metadata == table.schema.metadata
    np.testing.assert_array_equal(legacy.column(LATENT_COLUMN).combine_chunks().to_numpy_ndarray(), latent_codes(table))
    np.testing.assert_array_equal(latent_codes(legacy), latent_codes(table))
    assert with_latent_type(legacy, table.schema.field(LATENT_COLUMN).type).equals(table, check_metadata=True)

    # An output whose committed shards hold the tensor type gets new shards of that type too.
    old = OutputStore(str(tmp_path / "old"), {})
    old.write_shard("shard-00000", legacy, [], 2, time.time(), {"inputs": SHARDS["shard-00001"]})
    assert pq.read_schema(tmp_path / "old" / "shard-00000.parquet").field(LATENT_COLUMN).type == tensor
    new = latent_table(["z.png"], ["file:///z.png"], codes(1, 9), {}, "float16")
    old.write_shard("shard-00001", new, [], 2, time.time(), {"inputs": ["z.png"]})
    assert pq.read_schema(tmp_path / "old" / "shard-00001.parquet").field(LATENT_COLUMN).type == tensor
    whole = pq.read_table(tmp_path / "old")  # still one dataset
    last = whole[LATENT_COLUMN].combine_chunks().to_numpy_ndarray()[-1]
    np.testing.assert_array_equal(last, codes(1, 9)[0].astype(np.float16))

    # A run looks the type up once (settled); its commits then list nothing and keep the same type.
    settled, fresh = old.settled(), OutputStore(str(tmp_path / "fresh"), {}).settled()
    assert (settled.tensor_latents, fresh.tensor_latents) == (True, False)
    for store, folder, kind in ((settled, "old", tensor), (fresh, "fresh", new.schema.field(LATENT_COLUMN).type)):
        store = OutputStore(*store.args)  # as a writer rebuilds it
        store.listed = None  # called, it would fail
        store.write_shard("shard-00002", new, [], 2, time.time(), {"inputs": ["z.png"]})
        assert pq.read_schema(tmp_path / folder / "shard-00002.parquet").field(LATENT_COLUMN).type == kind


def test_float16_values_are_not_byte_stream_split_and_float32_ones_are(outputs):
    for dtype in ("float32", "float16"):
        metadata = pq.ParquetFile(Path(outputs[dtype][0]) / "shard-00000.parquet").metadata
        column = next(metadata.row_group(0).column(i) for i in range(metadata.num_columns)
                      if metadata.row_group(0).column(i).path_in_schema.startswith(LATENT_COLUMN))
        assert column.path_in_schema == "w_plus.list.element.list.element"
        assert ("BYTE_STREAM_SPLIT" in column.encodings) == (dtype == "float32"), column.encodings


def test_an_image_jobs_output_reads_as_one_dataset_with_absolute_image_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = OutputStore("runs/edits", {})  # a relative output: its rows still name images by full path
    keys = ["a.png", "b.png"]
    table = latent_table(keys, [f"file:///in/{k}" for k in keys], codes(2, 5), {}, "float32")
    table = table.append_column("image", pa.array([store.image_uri("shard-00000", k) for k in keys]))
    images = {k: png_bytes(i) for i, k in enumerate(keys)}
    store.write_shard("shard-00000", table, [], 2, time.time(), {"inputs": keys},
                      images=images, preview=png_bytes(9), preview_rows=2)
    store.write_job({"job": "edit"})

    rows = pq.read_table("runs/edits")  # the folder, whose images sit under _images/
    assert rows.column_names == ["key", "source", "w_plus", "image"] and rows.num_rows == 2
    uris = rows["image"].to_pylist()
    assert uris == [f"{tmp_path}/runs/edits/_images/shard-00000/{k}" for k in keys]
    assert [Path(uri).read_bytes() for uri in uris] == [images[k] for k in keys]
    for reader in ("pyarrow", "pandas"):  # the readers of a folder; the others read only its *.parquet
        np.testing.assert_array_equal(run_reader(reader, "runs/edits")[1], codes(2, 5))


# The layout before: what the job wrote until the nested lists and _images/.


def downgrade(out: Path) -> None:
    """Rewrite a job's output as the version before wrote it: fixed_shape_tensor latents, BYTE_STREAM_SPLIT
    on them, images under images/ named so by the rows and the _files records."""
    for data in sorted(out.glob("shard-*.parquet")):
        table = pq.read_table(data)
        kind = table.schema.field(LATENT_COLUMN).type
        tensor = pa.fixed_shape_tensor(kind.value_type.value_type, (kind.list_size, kind.value_type.list_size))
        table = with_latent_type(table, tensor)
        if "image" in table.column_names:
            uris = [uri.replace("/_images/", "/images/") for uri in table["image"].to_pylist()]
            table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(uris))
        pq.write_table(table, data, compression="zstd", column_encoding={"w_plus.list.element": "BYTE_STREAM_SPLIT"},
                       use_dictionary=["key", "source"])
    if (out / "_images").exists():
        (out / "_images").rename(out / "images")
    for record in (out / "_files").glob("*.json"):
        files = json.loads(record.read_text())
        files["files"] = [f"images/{p[len('_images/'):]}" if p.startswith("_images/") else p for p in files["files"]]
        record.write_text(json.dumps(files))


def read_folder(out: Path) -> tuple[list[str], np.ndarray]:
    """Keys and codes of an output read as one dataset (the tiny model's codes are [10, 32])."""
    table = pq.read_table(out)
    return table["key"].to_pylist(), latent_codes(table)


def latent_types(out: Path) -> set[str]:
    return {str(pq.read_schema(p).field(LATENT_COLUMN).type) for p in out.glob("shard-*.parquet")}


def write_spec(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_outputs_of_the_layout_before_still_verify_resume_retry_edit_and_clean_up(ray_local, tmp_path, capsys):
    checkpoint = write_official(make_e2style(stages=1, seed=81), tmp_path / "e2style.pt")
    folder, latents, edits = tmp_path / "in", tmp_path / "latents", tmp_path / "edits"
    keys = make_image_folder(folder, good=5, bad={"c/broken.png": b"not a picture"})  # the last of shard 1
    invert = write_spec(tmp_path / "invert.yaml", {
        "input": {"uri": str(folder), "shard_size": 3},
        "model": {"checkpoint": str(checkpoint)},
        "output": {"uri": str(latents)},
        "resources": {"batch_size": 4},
        "max_failure_rate": 0.5,
    })
    assert invert_dataset.main([str(invert), "--no-progress"]) == EXIT_OK
    first = dict(zip(*read_folder(latents)))
    downgrade(latents)
    tensor = {str(pa.fixed_shape_tensor(pa.float32(), (10, 32)))}
    assert latent_types(latents) == tensor
    assert invert_dataset.main([str(invert), "--verify"]) == EXIT_OK

    (latents / "_stats" / "shard-00000.json").unlink()  # interrupted: the next run writes shard 0 again
    (folder / "c" / "broken.png").write_bytes(png_bytes(40))  # repaired: --retry-rejects recovers it in shard 1
    assert invert_dataset.main([str(invert), "--no-progress", "--retry-rejects"]) == EXIT_OK
    assert latent_types(latents) == tensor  # the folder stays one dataset of one type
    table = pq.read_table(latents)
    stored = dict(zip(table["key"].to_pylist(), table[LATENT_COLUMN].combine_chunks().to_numpy_ndarray()))
    assert sorted(stored) == sorted(keys + ["c/broken.png"])
    for key in keys:
        np.testing.assert_array_equal(stored[key], first[key])
    assert invert_dataset.main([str(invert), "--verify"]) == EXIT_OK

    # An edit reads those latents; its output is then turned into one of the layout before.
    np.save(tmp_path / "direction.npy", np.ones(32, np.float32))
    editing = write_spec(tmp_path / "edit.yaml", {
        "input": {"latents": str(latents)},
        "model": {"checkpoint": str(checkpoint)},
        "output": {"uri": str(edits)},
        "edit": {"kind": "direction", "direction": str(tmp_path / "direction.npy"), "strengths": [0]},
        "resources": {"batch_size": 4},
    })
    assert edit.main([str(editing), "--no-progress"]) == EXIT_OK
    edited = dict(zip(*read_folder(edits)))  # the folder reads as one dataset: images are under _images/
    assert sorted(edited) == sorted(stored)
    for key, value in stored.items():
        np.testing.assert_array_equal(edited[key], value)  # strength 0: the stored code itself
    uris = pq.read_table(edits)["image"].to_pylist()
    assert all(uri.startswith(f"{edits}/_images/shard-0000") and Image.open(uri).size == (32, 32) for uri in uris)

    downgrade(edits)
    assert edit.main([str(editing), "--verify"]) == EXIT_OK
    image = Path(uris[0].replace("/_images/", "/images/"))
    image.unlink()
    capsys.readouterr()
    assert edit.main([str(editing), "--verify"]) == 1  # the rows of the layout before name their images
    assert f"1 image named by rows but not there: '{image.relative_to(edits)}'" in capsys.readouterr().out
    image.write_bytes(png_bytes(1))
    (edits / "_stats" / "shard-00001.json").unlink()
    assert edit.main([str(editing), "--no-progress"]) == EXIT_OK  # shard 1 again, its images under _images/
    shards = [p.relative_to(edits / "_images").parts[0] for p in (edits / "_images").rglob("*.png")]
    assert shards == ["shard-00001"] * 3
    assert not (edits / "images" / "shard-00001").exists()
    assert latent_types(edits) == tensor
    assert edit.main([str(editing), "--verify"]) == EXIT_OK

    (edits / "images" / "mine.txt").write_bytes(b"the user's")
    (edits / "_files" / "shard-00000.json").unlink()  # as versions before _files records left it: rows name the images
    assert edit.main([str(editing), "--no-progress", "--overwrite"]) == EXIT_OK
    assert sorted(str(p.relative_to(edits / "images")) for p in (edits / "images").rglob("*")) == ["mine.txt"]
    assert latent_types(edits) == {str(latent_type(10, 32, "float32"))}
    assert edit.main([str(editing), "--verify"]) == EXIT_OK
