"""The spec's global storage_options: given once by URI scheme, they reach the input, the checkpoint, the
latents, a direction file, the output and the engine cache of that scheme; a section's own options win key
by key; they never decide the fingerprint and never appear in what a job writes or prints."""

import io
import re

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import free_ports, make_image_folder
from engines import load_inverter
from jobs import edit, invert_dataset
from jobs.cli import EXIT_BAD_SPEC, EXIT_OK, load_spec
from operators.images import images_to_tensor
from pipeline.core.spec import _Strict
from pipeline.core.store import latent_codes
from pipeline.edit.job import EDIT
from pipeline.edit.spec import EditSpec
from pipeline.evaluate.job import EVALUATE
from pipeline.inversion.job import INVERSION
from pipeline.inversion.spec import InversionSpec
from pipeline.restore.job import RESTORE
from pipeline.translate.job import TRANSLATE

SECRETS = {"key": "GLOBAL-KEY-ID-7f3a", "secret": "GLOBAL-SECRET-VALUE-91c2"}
RESOURCES = {"batch_size": 4}


def write_spec(path, spec: dict):
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def read_rows(fs, root: str) -> dict:
    tables = []
    for path in sorted(fs.glob(f"{root}/shard-*.parquet")):
        with fs.open(path, "rb") as f:
            tables.append(pq.read_table(f))
    rows = {name: [v for t in tables for v in t.column(name).to_pylist()] for name in tables[0].column_names if name != "w_plus"}
    rows["w_plus"] = np.concatenate([latent_codes(t) for t in tables])
    return rows


def everything_written(fs, root: str) -> str:
    """The text of every JSON file under ``root`` and the metadata and string columns of its Parquet files."""
    texts = []
    for path in fs.find(root):
        with fs.open(path, "rb") as f:
            data = f.read()
        if path.endswith(".json"):
            texts.append(data.decode())
        elif path.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
            texts.append(repr(table.schema.metadata))
            texts += [str(v) for name in table.column_names if name not in ("w_plus",) for v in table.column(name).to_pylist()]
    return "\n".join(texts)


@pytest.fixture
def bucket(s3_server, tmp_path):
    """(the loopback S3 filesystem, the name of a fresh bucket on it)."""
    s3 = fsspec.filesystem("s3", endpoint_url=s3_server)
    name = f"global-{abs(hash(str(tmp_path))) % 10**8}"
    s3.mkdir(name)
    return s3, name


def test_global_options_alone_reach_input_model_output_latents_and_direction(
    ray_local, s3_server, bucket, tiny_checkpoint, tmp_path, capsys
):
    s3, name = bucket
    folder = tmp_path / "in"
    keys = make_image_folder(folder, good=5)
    s3.put(str(folder) + "/", f"{name}/faces/", recursive=True)
    s3.put(str(tiny_checkpoint), f"{name}/e2style.pt")
    direction = np.random.default_rng(3).standard_normal(32).astype(np.float32)
    with s3.open(f"{name}/smile.npy", "wb") as f:
        np.save(f, direction)
    options = {"s3": {"endpoint_url": s3_server, **SECRETS}}
    invert = write_spec(tmp_path / "invert.yaml", {
        "storage_options": options,
        "input": {"uri": f"s3://{name}/faces/", "shard_size": 3},
        "model": {"checkpoint": f"s3://{name}/e2style.pt", "stages": 2},
        "output": {"uri": f"s3://{name}/latents/"},
        "resources": RESOURCES,
    })
    assert invert_dataset.main([str(invert), "--no-progress"]) == EXIT_OK
    rows = read_rows(s3, f"{name}/latents")
    assert rows["key"] == keys and rows["source"][0] == f"s3://{name}/faces/{keys[0]}"
    inverter = load_inverter(str(tiny_checkpoint), stages=2)
    pictures = np.stack([np.asarray(Image.open(folder / k).convert("RGB")) for k in keys])
    np.testing.assert_allclose(rows["w_plus"], inverter.invert(images_to_tensor(pictures)).numpy(), rtol=0, atol=1e-5)
    assert s3.exists(f"{name}/latents/_manifest.json")

    edit_spec = write_spec(tmp_path / "edit.yaml", {
        "storage_options": options,
        "input": {"latents": f"s3://{name}/latents/"},
        "model": {"checkpoint": f"s3://{name}/e2style.pt", "stages": 2},
        "output": {"uri": f"s3://{name}/smile/"},
        "edit": {"kind": "direction", "direction": f"s3://{name}/smile.npy", "strengths": [0, 3]},
        "resources": RESOURCES,
    })
    assert edit.main([str(edit_spec), "--no-progress"]) == EXIT_OK
    edited = read_rows(s3, f"{name}/smile")
    assert edited["key"] == [k for k in keys for _ in range(2)]
    moved = edited["w_plus"][1::2] - rows["w_plus"]
    np.testing.assert_allclose(moved[:, :8], np.broadcast_to(3 * direction, moved[:, :8].shape), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(moved[:, 8:], 0)
    assert all(s3.exists(uri) for uri in edited["image"])

    printed = capsys.readouterr()
    written = everything_written(s3, f"{name}/latents") + everything_written(s3, f"{name}/smile")
    for secret in (*SECRETS.values(), s3_server):
        assert secret not in printed.out + printed.err
        assert secret not in written


def test_the_fingerprint_ignores_where_the_options_are_given(ray_local, s3_server, bucket, tiny_checkpoint, tmp_path, capsys):
    s3, name = bucket
    folder = tmp_path / "in"
    make_image_folder(folder, good=3)
    s3.put(str(folder) + "/", f"{name}/faces/", recursive=True)
    base = {
        "input": {"uri": f"s3://{name}/faces/", "shard_size": 2},
        "model": {"checkpoint": str(tiny_checkpoint)},
        "output": {"uri": f"s3://{name}/latents/"},
        "resources": RESOURCES,
    }
    per_section = write_spec(tmp_path / "a.yaml", {
        **base,
        "input": {**base["input"], "storage_options": {"endpoint_url": s3_server}},
        "output": {**base["output"], "storage_options": {"endpoint_url": s3_server}},
    })
    assert invert_dataset.main([str(per_section), "--no-progress"]) == EXIT_OK
    capsys.readouterr()
    # The same endpoint spelled otherwise, given once: the rerun resumes instead of refusing the output.
    localhost = s3_server.replace("127.0.0.1", "localhost")
    once = write_spec(tmp_path / "b.yaml", {**base, "storage_options": {"s3": {"endpoint_url": localhost}}})
    assert invert_dataset.main([str(once), "--no-progress"]) == EXIT_OK
    assert "(2 already committed)" in capsys.readouterr().out
    assert (load_spec(per_section, InversionSpec).output_fingerprint()
            == load_spec(once, InversionSpec).output_fingerprint())


def test_a_sections_own_options_win_key_by_key(ray_local, s3_server, bucket, tiny_checkpoint, tmp_path):
    s3, name = bucket
    folder = tmp_path / "in"
    keys = make_image_folder(folder, good=3)
    s3.put(str(folder) + "/", f"{name}/faces/", recursive=True)
    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens: only a section's own endpoint works
    spec = write_spec(tmp_path / "spec.yaml", {
        "storage_options": {"s3": {"endpoint_url": nowhere, **SECRETS}},
        "input": {"uri": f"s3://{name}/faces/", "storage_options": {"endpoint_url": s3_server}},
        "model": {"checkpoint": str(tiny_checkpoint)},
        "output": {"uri": f"s3://{name}/out/", "storage_options": {"endpoint_url": s3_server, "key": "OUTPUT-KEY"}},
        "resources": RESOURCES,
    })
    loaded = load_spec(spec, InversionSpec)
    assert loaded.input.storage_options == {"endpoint_url": s3_server, **SECRETS}
    assert loaded.output.storage_options == {"endpoint_url": s3_server, "key": "OUTPUT-KEY", "secret": SECRETS["secret"]}
    assert loaded.model.storage_options == {}  # a local path: the s3 options are not for it
    assert invert_dataset.main([str(spec), "--no-progress"]) == EXIT_OK
    assert read_rows(s3, f"{name}/out")["key"] == keys


def test_merging_rules_on_every_section():
    spec = EditSpec.model_validate({
        "storage_options": {"s3": {"endpoint_url": "https://s3.example", "key": "K"}, "gs": {"project": "P"},
                            "file": {"auto_mkdir": True}},
        "input": {"latents": "s3://b/latents/", "latents_storage_options": {"key": "OWN"}},
        "model": {"checkpoint": "gs://models/e2style.pt"},
        "output": {"uri": "/data/out", "storage_options": {"auto_mkdir": False}},
        "engine": {"cache_uri": "S3://cache/engines/"},
        "edit": {"kind": "direction", "direction": "https://h/d.npy"},
    })
    assert spec.input.latents_storage_options == {"endpoint_url": "https://s3.example", "key": "OWN"}
    assert spec.input.storage_options == {}  # no input.uri
    assert spec.model.storage_options == {"project": "P"}
    assert spec.output.storage_options == {"auto_mkdir": False}
    assert spec.engine.cache_storage_options == {"endpoint_url": "https://s3.example", "key": "K"}  # schemes ignore case
    assert spec.edit.direction_storage_options == {}  # no https options given
    # A list of URIs of one scheme takes that scheme's options; of several, only options of its own.
    one = InversionSpec.model_validate({
        "storage_options": {"s3": {"anon": True}},
        "input": {"uri": ["s3://b/x/", "s3://c/y/"]}, "model": {"checkpoint": "/m.pt"}, "output": {"uri": "/o"},
    })
    assert one.input.storage_options == {"anon": True}
    mixed = {"input": {"uri": ["s3://b/x/", "/local/y/"]}, "model": {"checkpoint": "/m.pt"}, "output": {"uri": "/o"}}
    with pytest.raises(ValueError, match=r"input\.uri mixes URI schemes \(file, s3\).*give input\.storage_options"):
        InversionSpec.model_validate({**mixed, "storage_options": {"s3": {"anon": True}}})
    own = InversionSpec.model_validate({**mixed, "storage_options": {"s3": {"anon": True}},
                                        "input": {**mixed["input"], "storage_options": {"anon": False}}})
    assert own.input.storage_options == {"anon": False}


@pytest.mark.parametrize("options,message", [
    ({"endpoint_url": "https://s3.example"}, r"storage_options: Value error, 'endpoint_url' is not a URI scheme"),
    ({"s3": "https://s3.example"}, r"storage_options: Value error, s3: the options for s3:// URIs must be a mapping"),
])
def test_options_not_keyed_by_scheme_are_refused(tmp_path, tiny_checkpoint, capsys, options, message):
    spec = write_spec(tmp_path / "spec.yaml", {
        "storage_options": options,
        "input": {"uri": str(tmp_path)}, "model": {"checkpoint": str(tiny_checkpoint)}, "output": {"uri": str(tmp_path / "o")},
    })
    assert invert_dataset.main([str(spec)]) == EXIT_BAD_SPEC
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_every_storage_options_field_of_every_job_is_reached_by_the_global_options():
    """A section field named ``*storage_options`` that the global options skip would leave its URI
    without them: each must name the URI field it serves."""
    for kind in (INVERSION, RESTORE, TRANSLATE, EDIT, EVALUATE):
        for name, field in kind.spec_class.model_fields.items():
            section = field.annotation
            if not (isinstance(section, type) and issubclass(section, _Strict)):
                continue
            options = {f for f in section.model_fields if f.endswith("storage_options")}
            assert set(section.storage_uris) == options, f"{kind.name}.{name}"
            assert set(section.storage_uris.values()) <= set(section.model_fields), f"{kind.name}.{name}"


def test_global_options_and_their_values_are_secrets():
    from pipeline.core.secrets import spec_secrets

    spec = InversionSpec.model_validate({
        "storage_options": {"s3": {"endpoint_url": "https://s3.example", "client_kwargs": {"region_name": "eu-west-3"}}},
        "input": {"uri": "/in"}, "model": {"checkpoint": "/m.pt"}, "output": {"uri": "/o"},
    })
    assert spec_secrets(spec) == {"https://s3.example", "eu-west-3"}
