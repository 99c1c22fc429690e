"""The inversion job's spec: the sections every job has, nothing more."""

from __future__ import annotations

from pydantic import Field

from pipeline.core.spec import InputSpec, JobSpec, OutputSpec


class InversionSpec(JobSpec):
    input: InputSpec = Field(description="What to invert.")
    output: OutputSpec = Field(description="Where the W+ codes go.")
