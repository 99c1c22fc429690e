"""Specs of the application jobs: restoration, translation and editing.

Each takes the sections every job has (``JobSpec``: input, model, output, resources, engine) and adds its
own: ``task`` for restoration and translation, ``edit`` for editing. Their output holds images besides
the Parquet rows, so ``output`` also says how to encode them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from pipeline.spec import InputSpec, JobSpec, OutputSpec, StorageOptions, _Strict

# The official ``opts['dataset_type']`` each task's checkpoint was trained with.
TASK_DATASET_TYPES = {
    "colorization": "ffhq_colorization",
    "denoise": "ffhq_denoise",
    "inpainting": "ffhq_inpainting",
    "super_resolution": "celebs_super_resolution",
    "sketch_to_face": "celebs_sketch_to_face",
    "segmentation_to_face": "celebs_seg_to_face",
    "inversion": "ffhq_encode",
}


class ImageOutputSpec(OutputSpec):
    uri: str = Field(
        description="Folder (local or fsspec URL) that receives images/<shard>/ and one Parquet manifest per input shard."
    )
    image_format: Literal["png", "jpeg", "webp"] = Field("png", description="Encoding of the output images.")
    quality: int = Field(95, ge=1, le=100, description="jpeg and webp quality (png is lossless).")
    contact_sheet_rows: int = Field(
        32, ge=0, le=10_000, description="Rows (records) of _contact_sheet.png, inputs beside outputs; 0: no sheet."
    )


class RestoreTaskSpec(_Strict):
    name: Literal["colorization", "denoise", "inpainting", "super_resolution"] = Field(
        description="The restoration; the checkpoint's opts['dataset_type'] must be this task's."
    )
    evaluate: bool = Field(
        False,
        description="false: the inputs are degraded images as users have them (super_resolution: low-resolution "
        "images, upsampled bilinearly to the model's size). true: the inputs are clean images; each is degraded "
        "as the task's training did (seeded by its key), restored, and scored by PSNR and SSIM against itself.",
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="evaluate: seed of the degradations (each record's is derived from its key).")
    factor: int | None = Field(
        None, ge=1, le=1024, description="super_resolution with evaluate: the downsampling factor (official models: 1-32)."
    )
    noise: Literal["gaussian", "salt_and_pepper"] = Field("gaussian", description="denoise with evaluate: the noise.")
    variance: float = Field(0.01, gt=0, le=100, description="denoise with evaluate: Gaussian noise variance (of [0, 1] images).")
    amount: float = Field(0.05, gt=0, le=1, description="denoise with evaluate: fraction of salt-and-pepper values.")
    grey_weights: Literal["official", "bt601"] = Field(
        "official",
        description="colorization with evaluate: official (0.114 R + 0.587 G + 0.299 B, as training greyed the "
        "images) or bt601 (0.299 R + 0.587 G + 0.114 B).",
    )

    @model_validator(mode="after")
    def _parameters_of_this_task(self) -> "RestoreTaskSpec":
        own = {
            "super_resolution": {"factor"},
            "denoise": {"noise", "variance", "amount"},
            "colorization": {"grey_weights"},
            "inpainting": set(),
        }[self.name]
        stray = sorted((self.model_fields_set & {"factor", "noise", "variance", "amount", "grey_weights"}) - own)
        if stray:
            raise ValueError(f"{', '.join(stray)} do(es) not apply to task {self.name}")
        if self.evaluate and self.name == "super_resolution" and self.factor is None:
            raise ValueError("super_resolution with evaluate needs a factor (the downsampling to undo)")
        return self

    def degradation(self) -> dict[str, Any]:
        """The degradation's parameters (``task_inputs.degrade``), as recorded in each row."""
        if self.name == "super_resolution":
            return {"factor": self.factor}
        if self.name == "denoise":
            return {"noise": self.noise, "variance": self.variance} if self.noise == "gaussian" else {
                "noise": self.noise, "amount": self.amount}
        if self.name == "colorization":
            return {"grey_weights": self.grey_weights}
        return {}


class RestoreSpec(JobSpec):
    input: InputSpec = Field(description="The images to restore (or, with task.evaluate, clean images).")
    output: ImageOutputSpec = Field(description="Where the restored images and their manifest go.")
    task: RestoreTaskSpec = Field(description="Which restoration, and how to evaluate it.")

    def fingerprint_sections(self) -> dict[str, Any]:
        return {"task": self.task.model_dump()}


class TranslateTaskSpec(_Strict):
    name: Literal["sketch_to_face", "segmentation_to_face"] = Field(
        description="sketch_to_face: sketches (any mode, read as greyscale in [0, 1]); segmentation_to_face: "
        "label maps (one class index per pixel, mode L or P)."
    )


class TranslateSpec(JobSpec):
    input: InputSpec = Field(description="Sketches or label maps.")
    output: ImageOutputSpec = Field(description="Where the faces and their manifest go.")
    task: TranslateTaskSpec = Field(description="Which translation.")

    def fingerprint_sections(self) -> dict[str, Any]:
        return {"task": self.task.model_dump()}


class EditInputSpec(InputSpec):
    uri: str | list[str] | None = Field(
        None, description="Images to invert on the fly (a folder, a glob, or a list of URIs); or give latents."
    )
    latents: str | None = Field(
        None,
        description="An invert_dataset output folder: its committed W+ codes are edited, joined by key, with no "
        "second inversion (only the generator runs).",
    )
    latents_storage_options: StorageOptions = Field(
        default_factory=dict, description="fsspec options for the latents' filesystem."
    )

    @model_validator(mode="after")
    def _one_source(self) -> "EditInputSpec":
        if (self.uri is None) == (self.latents is None):
            raise ValueError("give exactly one of uri (images to invert) and latents (an invert_dataset output)")
        return self


class EditSectionSpec(_Strict):
    kind: Literal["direction", "mixing", "interpolation", "face_swap"] = Field(
        description="direction: move each code along a latent direction; mixing: take some layers from style "
        "records; interpolation: codes between pairs of records; face_swap: paste the centre of a source face "
        "onto a target, then invert and regenerate (the paper's Algorithm 2)."
    )
    direction: str | None = Field(
        None, description="direction: a .npy or .pt file holding one [style_dim] or [num_ws, style_dim] direction."
    )
    direction_storage_options: StorageOptions = Field(default_factory=dict, description="fsspec options for direction.")
    strengths: list[Annotated[float, Field(ge=-1e4, le=1e4)]] = Field(
        [-40, -30, -20, -10, -5, 0, 10, 20, 30, 40],
        min_length=1,
        max_length=1000,
        description="direction: the multiples of the direction to add (one output image each; the official values).",
    )
    layers: list[Annotated[int, Field(ge=0, le=1023)]] | None = Field(
        None,
        description="W+ layers the edit changes. direction: default 0-7 (the official edits); mixing: the layers "
        "taken from the style, default 10 to the last (the official default).",
    )
    styles: list[str] = Field(
        default_factory=list, description="mixing: keys of the style records; every record is mixed with each."
    )
    pairs: list[tuple[str, str]] = Field(
        default_factory=list,
        description="interpolation: [start key, end key] pairs; face_swap: [source key, target key] pairs.",
    )
    steps: int = Field(5, ge=0, le=1000, description="interpolation: codes between the two ends (the official default 5).")
    paste_fraction: float = Field(
        0.5, gt=0, le=1, description="face_swap: side of the pasted central box, as a fraction of the image side."
    )

    @model_validator(mode="after")
    def _fields_of_this_kind(self) -> "EditSectionSpec":
        own = {
            "direction": {"direction", "direction_storage_options", "strengths", "layers"},
            "mixing": {"styles", "layers"},
            "interpolation": {"pairs", "steps"},
            "face_swap": {"pairs", "paste_fraction"},
        }[self.kind]
        optional = {"direction", "direction_storage_options", "strengths", "layers", "styles", "pairs", "steps", "paste_fraction"}
        stray = sorted((self.model_fields_set & optional) - own)
        if stray:
            raise ValueError(f"{', '.join(stray)} do(es) not apply to kind {self.kind}")
        if self.kind == "direction" and self.direction is None:
            raise ValueError("kind direction needs direction (a .npy or .pt file)")
        if self.kind == "mixing" and not self.styles:
            raise ValueError("kind mixing needs styles (keys of the style records)")
        if self.kind in ("interpolation", "face_swap") and not self.pairs:
            raise ValueError(f"kind {self.kind} needs pairs")
        return self


class EditSpec(JobSpec):
    input: EditInputSpec = Field(description="W+ codes from an inversion output, or images to invert.")
    output: ImageOutputSpec = Field(description="Where the edited images and their manifest go.")
    edit: EditSectionSpec = Field(description="The edit.")

    @model_validator(mode="after")
    def _face_swap_needs_images(self) -> "EditSpec":
        if self.edit.kind == "face_swap" and self.input.latents is not None:
            raise ValueError("edit.kind face_swap pastes image parts, so it needs input.uri (images), not input.latents")
        return self

    def fingerprint_sections(self) -> dict[str, Any]:
        return {"edit": self.edit.model_dump(exclude={"direction_storage_options"})}
