"""The restoration job's checks and work."""

from __future__ import annotations

from pipeline.core.errors import PreflightError
from pipeline.core.images import image_writer
from pipeline.core.job import Checked, JobKind, Plan, Work, check_task, input_args, register
from pipeline.restore.model import RestoreModel
from pipeline.restore.spec import RestoreSpec
from pipeline.restore.steps import PrepareRestore
from pipeline.restore.tasks import restoration_task


class RestoreJob(JobKind):
    name = "restore"
    verb = "restored"
    spec_class = RestoreSpec
    contact_sheet = True

    def check(self, spec: RestoreSpec, cfg, info, shards) -> Checked:
        task = spec.task
        check_task(spec, info, task.name)
        if cfg.input_channels != 3:
            raise PreflightError(f"model.checkpoint: {spec.model.checkpoint} takes {cfg.input_channels}-channel input, not RGB")
        problem = restoration_task(task.name).size_problem(task, cfg.image_size) if task.evaluate else None
        if problem:
            raise PreflightError(problem)
        return Checked({"restoration": task.model_dump()})

    def work(self, plan: Plan) -> Work:
        spec: RestoreSpec = plan.spec
        task = spec.task
        prepare = PrepareRestore(
            plan.provenance.image_size, input_args(spec), task.name, task.evaluate, task.seed,
            task.degradation(), spec.output.contact_sheet_rows,
        )
        return Work(prepare, RestoreModel(task.evaluate), image_writer(plan, task.name))


RESTORE = register(RestoreJob())
