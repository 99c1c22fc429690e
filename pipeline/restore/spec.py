"""The restoration job's spec: the shared sections, image output, and ``task``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.core.spec import ImageOutputSpec, InputSpec, JobSpec, _Strict
from pipeline.restore.tasks import PARAMETERS, restoration_task


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
        task = restoration_task(self.name)
        stray = sorted((self.model_fields_set & set(PARAMETERS)) - set(task.parameters))
        if stray:
            raise ValueError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to task {self.name}")
        missing = [p for p in task.needed_to_evaluate if getattr(self, p) is None]
        if self.evaluate and missing:
            raise ValueError(f"{self.name} with evaluate needs a {missing[0]} (the degradation to undo)")
        return self

    def degradation(self) -> dict[str, Any]:
        """The degradation's parameters (``pipeline.restore.tasks``), as recorded in each row."""
        return restoration_task(self.name).recorded_parameters(self)


class RestoreSpec(JobSpec):
    input: InputSpec = Field(description="The images to restore (or, with task.evaluate, clean images).")
    output: ImageOutputSpec = Field(description="Where the restored images and their manifest go.")
    task: RestoreTaskSpec = Field(description="Which restoration, and how to evaluate it.")

    def fingerprint_sections(self) -> dict[str, Any]:
        return {"task": self.task.model_dump()}
