"""The editing job's spec: latents or images in, image output, and ``edit``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from pipeline.core.spec import ImageOutputSpec, InputSpec, JobSpec, StorageOptions, _Strict
from pipeline.edit.kinds import FIELDS, edit_kind


class EditInputSpec(InputSpec):
    storage_uris = {"storage_options": "uri", "latents_storage_options": "latents"}

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
    storage_uris = {"direction_storage_options": "direction"}

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
        kind = edit_kind(self.kind)
        stray = sorted((self.model_fields_set & FIELDS) - kind.fields)
        if stray:
            raise ValueError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to kind {self.kind}")
        missing = kind.missing(self)
        if missing:
            raise ValueError(missing)
        return self


class EditSpec(JobSpec):
    input: EditInputSpec = Field(description="W+ codes from an inversion output, or images to invert.")
    output: ImageOutputSpec = Field(description="Where the edited images and their manifest go.")
    edit: EditSectionSpec = Field(description="The edit.")

    @model_validator(mode="after")
    def _face_swap_needs_images(self) -> "EditSpec":
        if edit_kind(self.edit.kind).pastes_images and self.input.latents is not None:
            raise ValueError("edit.kind face_swap pastes image parts, so it needs input.uri (images), not input.latents")
        return self

    def fingerprint_sections(self) -> dict[str, Any]:
        return {"edit": self.edit.model_dump(exclude={"direction_storage_options"})}
