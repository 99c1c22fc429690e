"""The translation job's spec: the shared sections, image output, and ``task``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline.core.spec import ImageOutputSpec, InputSpec, JobSpec, _Strict


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
