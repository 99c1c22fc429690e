"""Every job's --help: its whole description, its spec's sections and the exit codes."""

import subprocess
import sys
import textwrap

import pytest

from jobs import edit, evaluate, invert_dataset, restore, translate
from jobs.cli import EXIT_BAD_SPEC, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from pipeline.edit.spec import EditSpec
from pipeline.evaluate.spec import EvaluateSpec
from pipeline.inversion.spec import InversionSpec
from pipeline.restore.spec import RestoreSpec
from pipeline.translate.spec import TranslateSpec

EXIT_CODES = """\
exit codes:
  0    success (with --verify: the output holds every input record exactly once)
  1    the job ran and failed (more rejects than max_failure_rate, a shard that failed after
       retries), or --verify found differences; committed shards are kept
  2    the spec or its inputs are unusable (a missing checkpoint, unreachable storage, an output of
       another spec), or another run is writing the output: found before any work started, nothing
       written
  130  interrupted (Ctrl-C): committed shards are kept, and the same command resumes
"""


def help_text(module, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("module, spec_class, job_section", [
    (invert_dataset, InversionSpec, None),
    (restore, RestoreSpec, "task (required)"),
    (translate, TranslateSpec, "task (required)"),
    (edit, EditSpec, "edit (required)"),
    (evaluate, EvaluateSpec, "metrics"),
])
def test_help_shows_the_whole_description_the_spec_sections_and_the_exit_codes(module, spec_class, job_section, capsys):
    text = help_text(module, capsys)
    description = textwrap.dedent(module.__doc__).strip()
    assert description in text  # every sentence, as written (none cut at the first line)
    assert text.endswith(EXIT_CODES)
    assert (EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_INTERRUPTED) == (0, 1, 2, 130)
    sections = text.split("spec sections (a YAML mapping):\n", 1)[1].split("\n\nexit codes:", 1)[0].splitlines()
    named = [line.split("  ")[1].strip() for line in sections if not line.startswith("    ")]
    required = [f"{n} (required)" for n, f in spec_class.model_fields.items() if f.is_required()]
    assert named == required + [n for n, f in spec_class.model_fields.items() if not f.is_required()]
    assert job_section is None or job_section in named
    assert "  model (required)   The E2Style checkpoint. Fields: checkpoint, stages, storage_options." in sections
    assert "  max_failure_rate   The job fails when more than this fraction of input records are rejected." in sections


def test_help_of_a_job_module_run_as_a_program():
    done = subprocess.run([sys.executable, "-m", "jobs.restore", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    assert "manifest per input shard.\n\n    python -m jobs.restore spec.yaml" in done.stdout
    assert done.stdout.endswith(EXIT_CODES)
