"""The inversion job: RGB images in, W+ codes out (``pipeline.inversion.steps`` on CPU workers,
``pipeline.core.model_steps.invert_images`` in the actors)."""

from __future__ import annotations

from pipeline.core.decode import DecodeImages
from pipeline.core.errors import PreflightError
from pipeline.core.job import Checked, JobKind, Plan, Work, input_args, register
from pipeline.core.model_steps import invert_images
from pipeline.core.payloads import join_rows, part_of_rows
from pipeline.core.spec import JobSpec
from pipeline.inversion.spec import InversionSpec
from pipeline.inversion.steps import WriteLatents


class InversionJob(JobKind):
    name = "inversion"
    verb = "inverted"
    spec_class = InversionSpec

    def check(self, spec: JobSpec, cfg, info, shards) -> Checked:
        if cfg.input_channels != 3:
            raise PreflightError(
                f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input "
                f"(task {info.task}); the inversion job reads RGB images"
            )
        return Checked({})

    def work(self, plan: Plan) -> Work:
        spec = plan.spec
        return Work(
            prepare=DecodeImages(plan.provenance.image_size, input_args(spec)),
            model=invert_images,
            write=WriteLatents(plan.provenance, spec.output.latent_dtype, spec.output.row_group_size),
            part=part_of_rows,
            join=join_rows,
        )


INVERSION = register(InversionJob())
