"""The editing job's checks and work: W+ codes joined by key from an inversion output, or inverted on the fly from images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from engines import checkpoint_sha256
from engines.directions import DirectionError, load_direction
from pipeline.core.decode import read_records
from pipeline.core.errors import PreflightError
from pipeline.core.formats import input_format
from pipeline.core.images import image_writer
from pipeline.core.job import Checked, JobKind, Plan, Work, input_args, register
from pipeline.core.shards import Shard, index_keys, list_shards
from pipeline.core.storage import filesystem
from pipeline.core.store import OutputStore
from pipeline.edit.kinds import EditParameters, edit_kind
from pipeline.edit.model import EditModel
from pipeline.edit.spec import EditSpec
from pipeline.edit.steps import PrepareEdit


@dataclass(frozen=True)
class EditFindings:
    """What the edit's checks found for its work."""

    parameters: EditParameters  # the resolved layers and the loaded direction
    partners: dict[str, Shard]  # key -> the shard holding it, for every key the edit names


class EditJob(JobKind):
    """Edits W+ codes joined by key from an inversion output, or inverted on the fly from images."""

    name = "edit"
    verb = "edited"
    spec_class = EditSpec
    contact_sheet = True

    def list_input(self, spec: EditSpec) -> list[Shard]:
        if spec.input.latents is None:
            return super().list_input(spec)
        latents = OutputStore(spec.input.latents, spec.input.latents_storage_options)
        job = latents.read_job()
        committed = latents.committed()
        if job is None or not committed:
            raise PreflightError(f"input.latents: {spec.input.latents} holds no committed invert_dataset output")
        files = [latents.uri.rstrip("/") + "/" + stats.data_file for stats in committed.values()]
        return list_shards(files, "parquet", 1, spec.input.latents_storage_options)

    def check(self, spec: EditSpec, cfg, info, shards) -> Checked:
        edit = spec.edit
        num_ws, dim = cfg.num_ws, cfg.style_dim
        extra: dict[str, Any] = {"edit": edit.kind}
        if spec.input.latents is not None:
            job = OutputStore(spec.input.latents, spec.input.latents_storage_options).read_job()
            if (job.get("num_ws"), job.get("style_dim")) != (num_ws, dim):
                raise PreflightError(
                    f"input.latents: {spec.input.latents} holds W+ codes of [{job.get('num_ws')}, {job.get('style_dim')}]; "
                    f"the generator of {spec.model.checkpoint} takes [{num_ws}, {dim}]"
                )
            extra["latents_checkpoint_sha256"] = job.get("checkpoint_sha256")
        elif cfg.input_channels != 3:
            raise PreflightError(f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input, not RGB")
        direction = None
        if edit.direction is not None:
            try:
                direction = load_direction(edit.direction, num_ws, dim, edit.direction_storage_options)
                extra["direction_sha256"] = checkpoint_sha256(edit.direction, edit.direction_storage_options)
            except (DirectionError, ValueError) as e:
                raise PreflightError(f"edit.direction: {e}") from e
        kind = edit_kind(edit.kind)
        layers = tuple(edit.layers if edit.layers is not None else kind.default_layers(num_ws))
        if kind.takes_layers:
            if not layers:
                raise PreflightError(f"edit.layers: none given, and the default (10 to the last) is empty for {num_ws} W+ layers")
            bad = [layer for layer in layers if not 0 <= layer < num_ws]
            if bad:
                raise PreflightError(f"edit.layers: {bad} outside 0..{num_ws - 1} (this generator has {num_ws} W+ layers)")
        return Checked(extra, EditFindings(EditParameters(layers, direction, edit.steps), self._index_partners(spec, shards)))

    def _index_partners(self, spec: EditSpec, shards: list[Shard]) -> dict[str, Shard]:
        """The shard of every key the edit names, found before any work: a missing one fails the spec."""
        edit = spec.edit
        named = [(f"edit.styles[{i}]", key) for i, key in enumerate(edit.styles)]
        named += [(f"edit.pairs[{i}][{j}]", key) for i, pair in enumerate(edit.pairs) for j, key in enumerate(pair)]
        if not named:
            return {}
        index = key_index(spec, shards)
        missing = [(where, key) for where, key in named if key not in index]
        if missing:
            where, key = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            source = spec.input.latents or spec.input.uri
            raise PreflightError(f"{where}: key {key!r} is not in the input {source}{more}")
        wanted = {key for _, key in named}
        return {key: shard for key, shard in index.items() if key in wanted}

    def record_keys(self, spec: EditSpec, shard: Shard, stats: dict | None) -> list[str]:
        if spec.input.latents is not None:
            fs, path = filesystem(shard.source, spec.input.latents_storage_options)
            with fs.open(path, "rb") as f:
                keys = pq.read_table(f, columns=["key"]).column("key").to_pylist()
        else:
            keys = super().record_keys(spec, shard, stats)
        wanted = edit_kind(spec.edit.kind).records(spec.edit)
        return keys if wanted is None else [k for k in keys if k in wanted]

    def rows_per_record(self, spec: EditSpec, key: str) -> int:
        return len(edit_kind(spec.edit.kind).outputs(spec.edit, key))

    def work(self, plan: Plan) -> Work:
        spec: EditSpec = plan.spec
        edit, found = spec.edit, plan.found
        prepare = PrepareEdit(
            edit=edit,
            from_latents=spec.input.latents is not None,
            size=plan.provenance.image_size,
            input_spec={**input_args(spec), "latents_storage_options": dict(spec.input.latents_storage_options)},
            partners=found.partners,
            preview_rows=spec.output.contact_sheet_rows,
        )
        model = EditModel(edit.kind, found.parameters)
        return Work(prepare, model, image_writer(plan, edit.kind))


def key_index(spec: EditSpec, shards: list[Shard]) -> dict[str, Shard]:
    """key -> the shard that holds it. Image files are their own one-record shards (read alone); keys in
    latents, WebDataset and Parquet files are read from the files."""
    if input_format(shards[0].format).records_listed:
        return {r.key: Shard(index=-1, format=s.format, records=(r,)) for s in shards for r in s.records}

    def keys_of(shard: Shard) -> list[str]:
        if spec.input.latents is not None:
            fs, path = filesystem(shard.source, spec.input.latents_storage_options)
            with fs.open(path, "rb") as f:
                return pq.read_table(f, columns=["key"]).column("key").to_pylist()
        return [key for key, _, _ in read_records(shard, spec.input.storage_options, spec.input.image_column, spec.input.key_column)]

    # A join by a key two files hold would pair records of different files.
    return index_keys(shards, keys_of, "input", "the records an edit names must have unique keys")


EDIT = register(EditJob())
