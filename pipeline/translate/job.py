"""The translation job's checks and work."""

from __future__ import annotations

from pipeline.core.errors import PreflightError
from pipeline.core.images import image_writer
from pipeline.core.job import Checked, JobKind, Plan, Work, check_task, input_args, register
from pipeline.translate.model import translate
from pipeline.translate.spec import TranslateSpec
from pipeline.translate.steps import PrepareTranslate, translation


class TranslateJob(JobKind):
    name = "translate"
    verb = "translated"
    spec_class = TranslateSpec
    contact_sheet = True

    def check(self, spec: TranslateSpec, cfg, info, shards) -> Checked:
        task = spec.task.name
        check_task(spec, info, task)
        channels = translation(task).channels
        if cfg.input_channels != channels:
            raise PreflightError(
                f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input; "
                f"{task} gives {channels}"
            )
        return Checked({"translation": task})

    def work(self, plan: Plan) -> Work:
        spec: TranslateSpec = plan.spec
        task = spec.task.name
        prepare = PrepareTranslate(
            plan.provenance.image_size, input_args(spec), task, spec.output.contact_sheet_rows
        )
        return Work(prepare, translate, image_writer(plan, task))


TRANSLATE = register(TranslateJob())
