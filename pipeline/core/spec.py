"""Job specs: what to read, which model, where to write, with which resources.

``JobSpec`` holds the sections every job shares, ``ImageOutputSpec`` the output of jobs that make images;
each job's package (``pipeline.inversion.spec``, ``pipeline.restore.spec``, ...) adds its own sections.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

import fsspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.core.image_formats import DEFAULT_FORMATS, FORMAT_EXTENSIONS
from pipeline.core.secrets import redact_uri


class _Strict(BaseModel):
    # No inf or nan anywhere: every number of a spec is a count, a size, a rate or a threshold.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # Each of the section's storage options fields and the URI field it is for (a URI, a list of them, or
    # None), so that the spec's global storage_options reach every URI of their scheme.
    storage_uris: ClassVar[dict[str, str]] = {}

    @classmethod
    def with_global_storage_options(cls, section: dict, by_scheme: dict, name: str) -> dict:
        """The raw ``section`` with the options of its URIs' scheme from ``by_scheme`` under its own, which
        win key by key. Malformed values are left for validation to report."""
        merged = dict(section)
        for options_field, uri_field in cls.storage_uris.items():
            uris = section.get(uri_field)
            schemes = {uri_scheme(u) for u in ([uris] if isinstance(uris, str) else uris or []) if isinstance(u, str)}
            matched = sorted(s for s in schemes if isinstance(by_scheme.get(s), dict))
            own = section.get(options_field, {})
            if not matched or not isinstance(own, dict):
                continue
            if len(schemes) > 1:
                if options_field in section:
                    continue  # the section's own options, for all of its URIs
                raise ValueError(
                    f"{name}.{uri_field} mixes URI schemes ({', '.join(sorted(schemes))}), and one {name}."
                    f"{options_field} serves them all, so the spec's storage_options for {matched[0]} cannot apply "
                    f"to just some of them: give {name}.{options_field} for all of them"
                )
            merged[options_field] = {**by_scheme[matched[0]], **own}
        return merged


def uri_scheme(uri: str) -> str:
    """The scheme that a URI's global storage options are found by: ``s3`` for ``s3://bucket/key``, ``file``
    for a local path."""
    protocol, _ = fsspec.core.split_protocol(uri)
    return (protocol or "file").lower()


# Upper bounds far beyond any real cluster, which keep every value usable as an int, a thread count and a
# Ray resource request.
MAX_COUNT = 1_000_000
MAX_CPUS = 1024
MAX_GPUS = 64
RAY_RESOURCE_UNIT = 0.0001  # Ray refuses a nonzero fractional resource request below this


StorageOptions = dict[str, Any]
ImageFormat = Literal[tuple(FORMAT_EXTENSIONS)]  # type: ignore[valid-type]


class InputSpec(_Strict):
    storage_uris = {"storage_options": "uri"}

    uri: str | list[str] = Field(
        description="A folder, a glob, or a list of URIs (local paths or fsspec URLs such as s3://bucket/faces/)."
    )
    format: Literal["images", "webdataset", "parquet"] = Field(
        "images",
        description="images: a folder or glob of image files (jpg, jpeg, png, webp, bmp), cut into shards of "
        "shard_size; webdataset: .tar shards, one sample per key; parquet: files with an image-bytes column. "
        "For webdataset and parquet each file is a shard.",
    )
    shard_size: int = Field(
        1000, ge=1, le=MAX_COUNT, description="images format: files per shard (the sorted file list is cut into groups)."
    )
    image_column: str = Field(
        "image", description="parquet format: the column of encoded image bytes (or {bytes, path} structs)."
    )
    key_column: str | None = Field(
        None, description="parquet format: the column of record keys; default '<file name>:<row>'."
    )
    resize: bool = Field(
        False,
        description="Resize images of another size to the model's input size (bilinear, like the official "
        "transform). When false such images are rejected.",
    )
    fast_jpeg: bool = Field(
        False,
        description="With resize: decode JPEGs larger than the model's input at 1/2, 1/4 or 1/8 of their size in "
        "the JPEG decoder itself (still at least the input size), then resize: 3-15x faster for 1024 px "
        "photos read at 256 px (BENCHMARKS.md). The pixels differ slightly from a full decode, so it is off by "
        "default, which matches the official preprocessing exactly.",
    )
    convert_to_rgb: bool = Field(
        False,
        description="Convert images in another mode (L, RGBA, CMYK, P, ...) to RGB. When false they are rejected.",
    )
    storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec options for the input filesystem, e.g. {endpoint_url: ..., anon: false}; they win, key "
        "by key, over the spec's storage_options for the input's scheme. Credentials may also come from the "
        "environment.",
    )
    formats: list[ImageFormat] = Field(
        default_factory=lambda: list(DEFAULT_FORMATS),
        min_length=1,
        description="Image formats decoded from the input (Pillow names: JPEG, PNG, WEBP, BMP by default; also "
        "TIFF, GIF, PPM, TGA, JPEG2000). Files of any other format, whatever their extension, are rejects "
        "naming the real format; formats such as EPS and PDF, which run external programs, are never read.",
    )


    @model_validator(mode="after")
    def _fast_jpeg_resizes(self):
        if self.fast_jpeg and not self.resize:
            raise ValueError("fast_jpeg decodes JPEGs at a reduced size for resizing: set resize: true as well")
        return self

class ModelSpec(_Strict):
    storage_uris = {"storage_options": "checkpoint"}

    checkpoint: str = Field(description="Official E2Style checkpoint file: a local path or an fsspec URL.")
    stages: int | None = Field(
        None, ge=1, le=64, description="Stages to run; at most the file's opts['training_stage']. Default: all of them."
    )
    storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec options for the checkpoint's filesystem (over the spec's storage_options for its scheme).",
    )


class OutputSpec(_Strict):
    storage_uris = {"storage_options": "uri"}

    uri: str = Field(description="Folder (local or fsspec URL) that receives one Parquet file per input shard.")
    latent_dtype: Literal["float32", "float16"] = Field(
        "float32", description="Storage type of the W+ codes. float16 halves the size and rounds each value."
    )
    row_group_size: int = Field(
        2048, ge=1, le=MAX_COUNT, description="Rows per Parquet row group (a W+ row is 36 KiB in float32)."
    )
    storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec options for the output filesystem (over the spec's storage_options for its scheme).",
    )


class ResourcesSpec(_Strict):
    num_actors: int = Field(1, ge=1, le=10_000, description="Inference actors, each holding one copy of the model.")
    num_gpus_per_actor: float = Field(
        0.0, ge=0, le=MAX_GPUS,
        description="GPUs reserved per actor; 0 runs the model on CPU, else at least 0.0001. A fraction shares a GPU "
        "(0.5: two actors on each), which pays when one actor cannot keep it busy (benchmarks/bench_pipeline.py --gpu).",
    )
    num_cpus_per_actor: float = Field(
        1.0,
        ge=RAY_RESOURCE_UNIT,
        le=MAX_CPUS,
        description="CPUs reserved per actor (also its torch threads, rounded up).",
    )
    batch_size: int = Field(32, ge=1, le=65_536, description="Images per model call.")
    decode_cpus: float = Field(
        1.0, ge=RAY_RESOURCE_UNIT, le=MAX_CPUS,
        description="CPUs reserved by each shard-decoding task; it decodes that many images at a time (at least one).",
    )
    shards_in_flight: int = Field(
        0,
        ge=0,
        le=10_000,
        description="Shards decoding or waiting for an actor at once (their images are held in Ray's object "
        "store); 0: as many as the CPUs the actors leave free can decode side by side (decode_cpus each), plus "
        "two queued per actor.",
    )

    @field_validator("num_gpus_per_actor")
    @classmethod
    def _a_share_ray_grants(cls, value: float) -> float:
        if 0 < value < RAY_RESOURCE_UNIT:
            raise ValueError(f"must be 0 or at least {RAY_RESOURCE_UNIT} (the smallest GPU share Ray grants)")
        return value


class GateSpec(_Strict):
    max_wplus_error: float | None = Field(
        None, gt=0, le=1e6, description="Largest allowed |W+ - W+ of float32 PyTorch| on the gate batch; default by precision "
        "(1e-3 float32, 0.05 float16, 0.1 bfloat16)."
    )
    min_psnr_db: float | None = Field(
        None, gt=0, le=1000, description="Smallest allowed reconstruction PSNR against float32 PyTorch; default 60 dB for "
        "float32, 40 dB for reduced precision."
    )
    batch: int = Field(4, ge=1, le=1024, description="Images in the fixed gate batch.")


class EngineSpec(_Strict):
    storage_uris = {"cache_storage_options": "cache_uri"}

    backend: Literal["torch", "onnxruntime", "tensorrt", "aoti"] = Field(
        "torch", description="torch (eager or compiled), onnxruntime (CPU, or CUDA when present), tensorrt (GPU) or "
        "aoti (graphs compiled ahead of time by AOTInductor once, cached under cache_uri, loaded by every actor)."
    )
    precision: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Arithmetic precision; reduced precision needs torch on a GPU or tensorrt."
    )
    fallback: list[Literal["float32", "bfloat16", "float16"]] = Field(
        default_factory=list,
        description="Precisions to try in turn when the engine fails the accuracy gate, e.g. [float32]. "
        "Empty: a failed gate fails the job before any work.",
    )
    compile: bool = Field(False, description="torch backend: torch.compile the graphs.")
    modulation: Literal["grouped", "batched", "folded", "fused", "fused-folded"] = Field(
        "fused", description="torch and aoti backends: how the generator is computed (all give the same numbers): "
        "grouped (the research code's per-sample weights), batched (one shared weight per convolution), folded "
        "(batched, the upsampling blur folded into its convolution), fused / fused-folded (prepared once for "
        "inference: weights in the engine's precision, channels-last, fused epilogue), the fastest on CPU and "
        "the default."
    )
    cuda_graphs: bool = Field(False, description="torch backend on GPU: compile with CUDA graphs (needs compile).")
    min_batch: int = Field(1, ge=1, le=65_536, description="tensorrt: smallest batch of the dynamic batch profile.")
    max_batch: int | None = Field(
        None, ge=1, le=65_536, description="Largest batch an engine runs at once (tensorrt: the profile's maximum). "
        "Default: on a GPU the torch engine times batches of 8 to 128 once (cached) and keeps the fastest that "
        "fits, which model calls then get; elsewhere resources.batch_size. The profile's optimum is "
        "resources.batch_size."
    )
    cache_uri: str | None = Field(
        None, description="Folder or fsspec URI for exported graphs and TensorRT plans, shared by the cluster; "
        "default: _engines/ under output.uri."
    )
    cache_storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec options for cache_uri (over the spec's storage_options for its scheme); without "
        "cache_uri the output's options serve the cache under it.",
    )
    gate: GateSpec = Field(default_factory=GateSpec, description="The accuracy gate every engine passes first.")

    @model_validator(mode="after")
    def _consistent(self) -> "EngineSpec":
        if self.backend == "onnxruntime" and any(p != "float32" for p in (self.precision, *self.fallback)):
            raise ValueError("onnxruntime runs float32 only; use backend tensorrt or torch for reduced precision")
        if self.cuda_graphs and not self.compile:
            raise ValueError("cuda_graphs needs compile: true (CUDA graphs come from torch.compile)")
        if self.max_batch is not None and self.min_batch > self.max_batch:
            raise ValueError(f"min_batch {self.min_batch} is larger than max_batch {self.max_batch}")
        return self


class JobSpec(_Strict):
    input: InputSpec = Field(description="What to read.")
    model: ModelSpec = Field(description="The E2Style checkpoint.")
    output: OutputSpec = Field(description="Where the results go.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Ray resources and batching.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="How the model runs (engines.build_engine).")
    max_failure_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="The job fails when more than this fraction of input records are rejected.",
    )
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join; default: the one in RAY_ADDRESS (as under `ray job submit`), "
        "else a local Ray started for the job.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options by URI scheme, for every URI of that scheme in the spec (input, latents, "
        "checkpoint, direction, output, engine cache): {s3: {endpoint_url: https://..., key: ...}, gs: {...}}; "
        "a local path's scheme is file. A section's own storage_options win, key by key.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_global_storage_options(cls, data: Any) -> Any:
        by_scheme = data.get("storage_options") if isinstance(data, dict) else None
        if not isinstance(by_scheme, dict) or not by_scheme:
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            section_class, section = field.annotation, data.get(name)
            if isinstance(section, dict) and isinstance(section_class, type) and issubclass(section_class, _Strict):
                data[name] = section_class.with_global_storage_options(section, by_scheme, name)
        return data

    @field_validator("storage_options")
    @classmethod
    def _keyed_by_scheme(cls, value: dict[str, Any]) -> dict[str, Any]:
        known = set(fsspec.available_protocols())
        for scheme, options in value.items():
            if scheme not in known:
                raise ValueError(
                    f"{scheme!r} is not a URI scheme fsspec knows: the spec's storage_options are keyed by scheme, "
                    "e.g. {s3: {endpoint_url: ...}} (a section's storage_options hold the options themselves)"
                )
            if not isinstance(options, dict):
                raise ValueError(f"{scheme}: the options for {scheme}:// URIs must be a mapping, e.g. {{endpoint_url: ...}}")
        return value

    @field_validator("input")
    @classmethod
    def _uri_not_empty(cls, value: InputSpec) -> InputSpec:
        uris = [] if value.uri is None else [value.uri] if isinstance(value.uri, str) else value.uri
        if value.uri is not None and (not uris or any(not u.strip() for u in uris)):
            raise ValueError("input.uri must name at least one non-empty URI")
        return value

    def output_fingerprint(self) -> str:
        """A hash of everything that decides the output's content (``fingerprinted``)."""
        return hashlib.sha256(json.dumps(self.fingerprinted(), sort_keys=True).encode()).hexdigest()

    def fingerprinted(self) -> dict[str, Any]:
        """The sections and fields that decide the output's content (not credentials, not resources)."""
        # URIs without their query values: a presigned URL's signature changes from run to run, and it
        # must not be what decides that a rerun resumes the output.
        relevant = {
            "input": _redact_uris(self.input.model_dump(exclude={"storage_options", *self._later_defaults()})),
            "model": _redact_uris(self.model.model_dump(exclude={"storage_options"})),
            "output": self.output.model_dump(exclude={"storage_options", "uri"}),
            "engine": self.engine.model_dump(include={"backend", "precision"}),
        }
        relevant.update(self.fingerprint_sections())
        return relevant

    def _later_defaults(self) -> set[str]:
        """The input fields added after the first release that are at their defaults: outputs written
        before those fields existed keep their fingerprint."""
        defaults = {"formats": tuple(self.input.formats) == DEFAULT_FORMATS, "fast_jpeg": not self.input.fast_jpeg}
        return {name for name, at_default in defaults.items() if at_default}

    def fingerprint_sections(self) -> dict[str, Any]:
        """A job's own sections that decide its output (none for inversion)."""
        return {}


def _redact_uris(section: dict[str, Any]) -> dict[str, Any]:
    """A section as the fingerprint sees it: URIs redacted, and any storage options left in it emptied
    (endpoints and credentials never decide it; the key stays, so outputs written without options keep
    their fingerprint)."""
    def one(value: Any) -> Any:
        if isinstance(value, str):
            return redact_uri(value)
        return [one(v) for v in value] if isinstance(value, list) else value

    return {
        k: {} if k.endswith("storage_options") else one(v) if k in ("uri", "checkpoint", "latents") else v
        for k, v in section.items()
    }


class ImageOutputSpec(OutputSpec):
    uri: str = Field(
        description="Folder (local or fsspec URL) that receives _images/<shard>/ and one Parquet manifest per input shard."
    )
    image_format: Literal["png", "jpeg", "webp"] = Field("png", description="Encoding of the output images.")
    quality: int = Field(95, ge=1, le=100, description="jpeg and webp quality (png is lossless).")
    contact_sheet_rows: int = Field(
        32, ge=0, le=10_000, description="Rows (records) of _contact_sheet.png, inputs beside outputs; 0: no sheet."
    )
