"""Running the inversion job in-process, as the tests do (the command line runs it through jobs.cli)."""

from pipeline.core.report import JobReport
from pipeline.core.schedule import run_job
from pipeline.inversion.job import INVERSION
from pipeline.inversion.spec import InversionSpec


def run_inversion(
    spec: InversionSpec, overwrite: bool = False, show_progress: bool = True, retry_rejects: bool = False
) -> JobReport:
    return run_job(spec, INVERSION, overwrite=overwrite, show_progress=show_progress, retry_rejects=retry_rejects)
