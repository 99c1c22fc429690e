"""What every job's command line shares: loading a YAML spec, the modes, the exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.runner import INVERSION, JobFailed, JobKind, PreflightError, run_job
from pipeline.verify import VerifyError, verify_output

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC = 0, 1, 2
EXIT_CODES = """Exit codes: 0 success; 1 the job ran and failed (too many rejects, a shard failed after retries), or
--verify found differences; 2 the spec or its inputs are unusable, detected before any work started and
with nothing written."""


def load_spec(path: Path, spec_class: type[BaseModel]) -> BaseModel:
    """Parse and validate a YAML spec. Raises ValueError naming the file and the offending fields."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read spec {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"spec {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"spec {path} must be a mapping with input, model and output, got {type(raw).__name__}")
    try:
        return spec_class.model_validate(raw)
    except ValidationError as e:
        problems = "\n".join(
            f"  {'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(f"spec {path} is invalid:\n{problems}") from None


def main(
    argv: list[str] | None,
    prog: str,
    description: str,
    spec_class: type[BaseModel],
    make_kind: Callable[[], JobKind] = lambda: INVERSION,
) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("spec", type=Path, help="YAML spec file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--overwrite", action="store_true", help="replace output of a different checkpoint, stage count or spec"
    )
    mode.add_argument(
        "--retry-rejects",
        action="store_true",
        help="also read and process again the rejected records of committed shards (after fixing the files, "
        "or after a storage outage); recovered records join their shard's output",
    )
    mode.add_argument(
        "--verify",
        action="store_true",
        help="run nothing: check that every input record is in the output or the rejects exactly once",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec, spec_class)
        kind = make_kind()
        if args.verify:
            verified = verify_output(spec, kind)
            print(verified.summary())
            return EXIT_OK if verified.ok else EXIT_FAILED
        report = run_job(
            spec, kind, overwrite=args.overwrite, show_progress=not args.no_progress, retry_rejects=args.retry_rejects
        )
    except (PreflightError, VerifyError, ValueError) as e:  # found before any work: nothing was written
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except JobFailed as e:
        print(f"job failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(report.summary())
    return EXIT_OK if report.succeeded else EXIT_FAILED
