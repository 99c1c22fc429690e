"""The paper's applications as jobs on the shared runner: restoration, translation and editing.

Each ``JobKind`` checks its spec against the checkpoint and the input before any work starts, and names
the work of one shard (``pipeline.app_tasks`` on CPU workers, ``pipeline.app_models`` in the actors).
Listing, incremental shards, commits, rejects, retries, progress and --verify are the runner's.
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from engines import checkpoint_sha256
from engines.directions import DirectionError, load_direction
from pipeline.app_models import EditModel, RestoreModel, translate
from pipeline.app_specs import TASK_DATASET_TYPES, EditSpec, RestoreSpec, TranslateSpec
from pipeline.app_tasks import PrepareEdit, PrepareRestore, PrepareTranslate, WriteImages
from pipeline.decode import read_records
from pipeline.runner import JobKind, Plan, PreflightError, Work, index_keys
from pipeline.shards import Shard, list_shards
from pipeline.sink import OutputStore
from pipeline.storage import filesystem

TRANSLATION_CHANNELS = {"sketch_to_face": 1, "segmentation_to_face": 19}


def check_task(spec, info, task: str) -> None:
    """Refuse a checkpoint whose opts say it was trained for another task."""
    wanted = TASK_DATASET_TYPES[task]
    if info.task is not None and info.task != wanted:
        trained_for = next((name for name, d in TASK_DATASET_TYPES.items() if d == info.task), info.task)
        raise PreflightError(
            f"model.checkpoint: {spec.model.checkpoint} was trained for {trained_for} (its opts['dataset_type'] "
            f"is {info.task!r}); task {task} needs a {wanted!r} checkpoint"
        )


def _input_args(spec) -> dict:
    return spec.input.model_dump(
        include={"resize", "convert_to_rgb", "storage_options", "image_column", "key_column", "formats"}
    )


def _writer(plan: Plan, task: str) -> WriteImages:
    out = plan.spec.output
    return WriteImages(
        plan.provenance, task, out.latent_dtype, out.row_group_size, out.image_format, out.quality, out.contact_sheet_rows
    )


class RestoreJob(JobKind):
    name = "restore"
    verb = "restored"
    contact_sheet = True

    def check(self, spec: RestoreSpec, cfg, info, shards) -> dict[str, Any]:
        task = spec.task
        check_task(spec, info, task.name)
        if cfg.input_channels != 3:
            raise PreflightError(f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input, not RGB")
        if task.evaluate and task.name == "super_resolution":
            size, factor = cfg.image_size, task.factor
            if size % factor or (3 * factor + 1) // 2 >= size:
                raise PreflightError(
                    f"task.factor: {factor} cannot downsample the model's {size} px images (it must divide {size} "
                    f"and its padding of {3 * factor // 2} px fit inside the image)"
                )
        return {"restoration": task.model_dump()}

    def work(self, plan: Plan) -> Work:
        spec: RestoreSpec = plan.spec
        task = spec.task
        prepare = PrepareRestore(
            plan.provenance["image_size"], _input_args(spec), task.name, task.evaluate, task.seed,
            task.degradation(), spec.output.contact_sheet_rows,
        )
        return Work(prepare, RestoreModel(task.evaluate), _writer(plan, task.name))


class TranslateJob(JobKind):
    name = "translate"
    verb = "translated"
    contact_sheet = True

    def check(self, spec: TranslateSpec, cfg, info, shards) -> dict[str, Any]:
        task = spec.task.name
        check_task(spec, info, task)
        channels = TRANSLATION_CHANNELS[task]
        if cfg.input_channels != channels:
            raise PreflightError(
                f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input; "
                f"{task} gives {channels}"
            )
        return {"translation": task}

    def work(self, plan: Plan) -> Work:
        spec: TranslateSpec = plan.spec
        task = spec.task.name
        prepare = PrepareTranslate(
            plan.provenance["image_size"], _input_args(spec), task, TRANSLATION_CHANNELS[task], spec.output.contact_sheet_rows
        )
        return Work(prepare, translate, _writer(plan, task))


class EditJob(JobKind):
    """Edits W+ codes joined by key from an inversion output, or inverted on the fly from images."""

    name = "edit"
    verb = "edited"
    contact_sheet = True

    def __init__(self):
        self.direction = None
        self.layers: tuple[int, ...] = ()
        self.partners: dict[str, Shard] = {}

    def list_input(self, spec: EditSpec) -> list[Shard]:
        if spec.input.latents is None:
            return super().list_input(spec)
        latents = OutputStore(spec.input.latents, spec.input.latents_storage_options)
        job = latents.read_job()
        committed = latents.committed()
        if job is None or not committed:
            raise PreflightError(f"input.latents: {spec.input.latents} holds no committed invert_dataset output")
        files = [latents.uri.rstrip("/") + "/" + stats["data_file"] for stats in committed.values()]
        return list_shards(files, "parquet", 1, spec.input.latents_storage_options)

    def check(self, spec: EditSpec, cfg, info, shards) -> dict[str, Any]:
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
        if edit.kind == "direction":
            try:
                self.direction = load_direction(edit.direction, num_ws, dim, edit.direction_storage_options)
                extra["direction_sha256"] = checkpoint_sha256(edit.direction, edit.direction_storage_options)
            except (DirectionError, ValueError) as e:
                raise PreflightError(f"edit.direction: {e}") from e
        default = {"direction": range(0, min(8, num_ws)), "mixing": range(10, num_ws)}.get(edit.kind, ())
        self.layers = tuple(edit.layers if edit.layers is not None else default)
        if edit.kind in ("direction", "mixing"):
            if not self.layers:
                raise PreflightError(f"edit.layers: none given, and the default (10 to the last) is empty for {num_ws} W+ layers")
            bad = [layer for layer in self.layers if not 0 <= layer < num_ws]
            if bad:
                raise PreflightError(f"edit.layers: {bad} outside 0..{num_ws - 1} (this generator has {num_ws} W+ layers)")
        self.partners = self._index_partners(spec, shards)
        return extra

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
        pairs = spec.edit.pairs
        if spec.edit.kind == "interpolation":
            return [k for k in keys if any(start == k for start, _ in pairs)]
        if spec.edit.kind == "face_swap":
            return [k for k in keys if any(target == k for _, target in pairs)]
        return keys

    def rows_per_record(self, spec: EditSpec, key: str) -> int:
        edit = spec.edit
        if edit.kind == "direction":
            return len(edit.strengths)
        if edit.kind == "mixing":
            return len(edit.styles)
        if edit.kind == "interpolation":
            return (edit.steps + 2) * sum(start == key for start, _ in edit.pairs)
        return sum(target == key for _, target in edit.pairs)

    def work(self, plan: Plan) -> Work:
        spec: EditSpec = plan.spec
        edit = spec.edit
        prepare = PrepareEdit(
            kind=edit.kind,
            from_latents=spec.input.latents is not None,
            size=plan.provenance["image_size"],
            input_spec={**_input_args(spec), "latents_storage_options": dict(spec.input.latents_storage_options)},
            partners=self.partners,
            strengths=tuple(edit.strengths),
            styles=tuple(edit.styles),
            pairs=tuple(tuple(p) for p in edit.pairs),
            steps=edit.steps,
            paste_fraction=edit.paste_fraction,
            preview_rows=spec.output.contact_sheet_rows,
        )
        model = EditModel(edit.kind, self.layers, self.direction, edit.steps)
        return Work(prepare, model, _writer(plan, edit.kind))


def key_index(spec: EditSpec, shards: list[Shard]) -> dict[str, Shard]:
    """key -> the shard that holds it. Image files are their own one-record shards (read alone); keys in
    latents, WebDataset and Parquet files are read from the files."""
    if shards[0].format == "images":
        return {r.key: Shard(index=-1, format="images", records=(r,)) for s in shards for r in s.records}

    def keys_of(shard: Shard) -> list[str]:
        if spec.input.latents is not None:
            fs, path = filesystem(shard.source, spec.input.latents_storage_options)
            with fs.open(path, "rb") as f:
                return pq.read_table(f, columns=["key"]).column("key").to_pylist()
        return [key for key, _, _ in read_records(shard, spec.input.storage_options, spec.input.image_column, spec.input.key_column)]

    # A join by a key two files hold would pair records of different files.
    return index_keys(shards, keys_of, "input", "the records an edit names must have unique keys")

