"""The evaluation job's spec: clean images in, the codes of the final stage out, ``metrics`` (which to
compute, and the weight files of those that need a network) and ``evaluate`` (stages, engine precisions
to compare, contact sheets, and the edit whose quality to score)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.core.spec import InputSpec, JobSpec, OutputSpec, StorageOptions, _Strict

# Every metric the job computes, in the order of the report; those in NETWORK_METRICS need weight files.
METRICS = ("psnr", "ssim", "ms_ssim", "l2", "lpips", "identity", "fid")
NETWORK_METRICS = ("lpips", "identity", "fid")
DEFAULT_METRICS = ["psnr", "ssim", "ms_ssim", "l2", "lpips", "identity"]
MetricName = Literal[METRICS]  # type: ignore[valid-type]
Precision = Literal["float32", "bfloat16", "float16"]


def _named_once(values: list, what: str) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"each {what} may be named once")
    return values


class _WeightsSpec(_Strict):
    storage_uris = {"storage_options": "weights"}

    storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec options for the weight file(s) (over the spec's storage_options for their scheme).",
    )


class LpipsSpec(_WeightsSpec):
    weights: str | Annotated[list[str], Field(min_length=2, max_length=2)] | None = Field(
        None,
        description="torchvision's ImageNet trunk and the LPIPS v0.1 heads: [alexnet-owt-7be5be79.pth, alex.pth] "
        "(or [vgg16-397923af.pth, vgg.pth]), or one file holding both sets of keys; paths or fsspec URLs.",
    )
    net: Literal["alex", "vgg"] | None = Field(
        None, description="The trunk the file must hold (alex: the LPIPS of pSp and E2Style); default: as found."
    )


class IdentitySpec(_WeightsSpec):
    weights: str | None = Field(
        None, description="TreB1eN's IR-SE50 ArcFace model_ir_se50.pth (the file E2Style trains with)."
    )


class FidSpec(_WeightsSpec):
    weights: str | None = Field(None, description="pytorch-fid's pt_inception-2015-12-05-6726825d.pth.")


class MetricsSpec(_Strict):
    compute: list[MetricName] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(DEFAULT_METRICS),
        min_length=1,
        description="psnr, ssim (11x11 Gaussian), ms_ssim (5 scales: images of at least 176 px), l2 (mean squared "
        "error on [0, 1]) need no weights; lpips, identity (ArcFace cosine similarity) and fid (over the whole "
        "set, per stage) need their weights below.",
    )
    lpips: LpipsSpec = Field(default_factory=LpipsSpec, description="LPIPS's networks.")
    identity: IdentitySpec = Field(default_factory=IdentitySpec, description="The face-recognition network.")
    fid: FidSpec = Field(default_factory=FidSpec, description="The FID Inception-v3 network.")

    @field_validator("compute")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} named more than once")
        return value

    @classmethod
    def with_global_storage_options(cls, section: dict, by_scheme: dict, name: str) -> dict:
        """The spec's storage_options reach the weight files of each metric's subsection."""
        merged = dict(section)
        for metric in NETWORK_METRICS:
            sub = section.get(metric)
            if isinstance(sub, dict):
                merged[metric] = cls.model_fields[metric].annotation.with_global_storage_options(
                    sub, by_scheme, f"{name}.{metric}"
                )
        return merged

    def network_metrics(self) -> list[str]:
        return [m for m in self.compute if m in NETWORK_METRICS]


class EditQualitySpec(_Strict):
    storage_uris = {"direction_storage_options": "direction"}

    direction: str = Field(
        description="A .npy or .pt file holding one [style_dim] or [num_ws, style_dim] latent direction (as the "
        "edit job's edit.direction); a path or fsspec URL."
    )
    direction_storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec options for direction (over the spec's storage_options for its scheme).",
    )
    strengths: list[Annotated[float, Field(ge=-1e4, le=1e4)]] = Field(
        min_length=1,
        max_length=16,  # with fid, each holds 2048 features per record and 32 MiB of statistics per shard read
        description="The multiples of the direction to score, e.g. [-3, 0, 3]: strengths[i] gives the columns "
        "identity_edit<i> and fid_edit<i>. 0 scores the last stage's reconstruction itself. At most 16.",
    )
    layers: list[Annotated[int, Field(ge=0, le=1023)]] | None = Field(
        None, min_length=1, max_length=1024,
        description="W+ layers the edit changes; default 0-7 (the official edits, as the edit job's).",
    )

    @field_validator("strengths")
    @classmethod
    def _strengths_once(cls, value: list[float]) -> list[float]:
        return _named_once(value, "strength")


class EvaluateSection(_Strict):
    stages: list[Annotated[int, Field(ge=1, le=64)]] | None = Field(
        None, min_length=1,
        description="The stages to score (1: the first stage alone); default every stage the model runs.",
    )
    precisions: list[Precision] = Field(
        default_factory=list,
        description="Engine precisions to score beside the job's engine (the same backend and options), e.g. "
        "[bfloat16]: each record gets a row per engine, so the report shows what reduced precision costs. "
        "Not gated: measuring the difference is the point.",
    )
    best_worst: int = Field(
        6, ge=0, le=100,
        description="Records on each contact sheet of _best_worst.png (best and worst by identity and by PSNR at "
        "the last scored stage); 0: no sheets.",
    )
    edit: EditQualitySpec | None = Field(
        None,
        description="Editing quality (the paper's Table II): the last scored stage's codes moved along a latent "
        "direction by each strength, rendered, and scored against the inputs by identity similarity and FID "
        "(the job's engine only). Fields: direction, strengths, layers, direction_storage_options.",
    )

    @classmethod
    def with_global_storage_options(cls, section: dict, by_scheme: dict, name: str) -> dict:
        """The spec's storage_options reach the edit's direction file."""
        merged = dict(section)
        if isinstance(section.get("edit"), dict):
            merged["edit"] = EditQualitySpec.with_global_storage_options(section["edit"], by_scheme, f"{name}.edit")
        return merged

    @field_validator("stages")
    @classmethod
    def _stages_in_order(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else sorted(_named_once(value, "stage"))

    @field_validator("precisions")
    @classmethod
    def _precisions_once(cls, value: list[str]) -> list[str]:
        return _named_once(value, "precision")


class EvaluateSpec(JobSpec):
    input: InputSpec = Field(description="The clean images to invert and score.")
    output: OutputSpec = Field(description="Where the per-record scores (with the last stage's codes) and report go.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Which metrics, with which networks.")
    evaluate: EvaluateSection = Field(
        default_factory=EvaluateSection, description="Stages, engines, contact sheets, and an edit to score."
    )

    @model_validator(mode="after")
    def _other_engines(self) -> "EvaluateSpec":
        engine = self.engine
        taken = [p for p in self.evaluate.precisions if p in (engine.precision, *engine.fallback)]
        if taken:
            raise ValueError(
                f"evaluate.precisions: {taken[0]} is the job's engine precision (engine.precision or engine.fallback); "
                "list only the other precisions to compare with it"
            )
        if engine.backend == "onnxruntime" and self.evaluate.precisions:
            raise ValueError(
                "evaluate.precisions: the onnxruntime backend runs float32 only; use backend torch or tensorrt"
            )
        return self

    @model_validator(mode="after")
    def _edit_is_scored(self) -> "EvaluateSpec":
        if self.evaluate.edit is not None and not {"identity", "fid"} & set(self.metrics.compute):
            raise ValueError(
                "evaluate.edit: edits are scored by identity similarity and FID against the inputs (the paper's "
                "Table II), and metrics.compute has neither; add identity and/or fid to metrics.compute"
            )
        return self

    def fingerprint_sections(self) -> dict[str, Any]:
        # The weight files and the direction count by their sha256 (in the provenance), not by where they are.
        evaluate = self.evaluate.model_dump(exclude={"edit"})
        if self.evaluate.edit is not None:  # absent otherwise: outputs written before edits existed keep theirs
            evaluate["edit"] = self.evaluate.edit.model_dump(include={"strengths", "layers"})
        return {
            "metrics": {"compute": list(self.metrics.compute), "lpips_net": self.metrics.lpips.net},
            "evaluate": evaluate,
        }
