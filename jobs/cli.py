"""What every job's command line shares: loading a YAML spec, the modes, the exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.core.errors import JobFailed, PreflightError
from pipeline.core.job import JobKind
from pipeline.core.schedule import run_job
from pipeline.core.secrets import redact_text, spec_secrets
from pipeline.core.verify import VerifyError, verify_output

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = """Exit codes: 0 success; 1 the job ran and failed (too many rejects, a shard failed after retries), or
--verify found differences; 2 the spec or its inputs are unusable, or another run is writing the output,
detected before any work started and with nothing written; 130 interrupted (Ctrl-C): committed shards
are kept, and the same command resumes."""
MAX_SPEC_BYTES = 1 << 20  # a spec is a page of YAML; anything near this size is a mistake or an attack
MAX_SPEC_VALUES = 100_000  # keys, values and items after aliases are expanded (real specs have hundreds)
MAX_SPEC_DEPTH = 32  # mappings and lists inside each other (real specs nest four deep)


def _too_big(raw) -> str | None:
    """Why a loaded spec is too big to handle, or None. Each use of a YAML alias counts anew: aliases are
    fine for sharing storage_options between sections, but nested ones expand exponentially ("billion
    laughs"), a few lines becoming gigabytes once validated or dumped. Deep nesting is refused too, as it
    would break the recursive code (validation, redaction, hashing) that walks a spec later."""
    stack, seen = [(raw, 0)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_SPEC_VALUES:
            return f"expands to more than {MAX_SPEC_VALUES} values (nested YAML aliases?)"
        if depth > MAX_SPEC_DEPTH:
            return f"nests mappings and lists more than {MAX_SPEC_DEPTH} deep"
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in (*value.keys(), *value.values()))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


def load_spec(path: Path, spec_class: type[BaseModel]) -> BaseModel:
    """Parse and validate a YAML spec. Raises ValueError naming the file and the offending fields."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read spec {path}: {e.strerror or e}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise ValueError(f"spec {path} is larger than {MAX_SPEC_BYTES} bytes; a spec is a short YAML file")
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"spec {path} is not UTF-8 text: {e}") from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ValueError(f"spec {path} nests mappings and lists more than {MAX_SPEC_DEPTH} deep") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an integer of more digits than Python converts
        raise ValueError(f"spec {path} is not valid YAML: {' '.join(str(e).split())}") from None
    problem = _too_big(raw)
    if problem:
        raise ValueError(f"spec {path} {problem}")
    if not isinstance(raw, dict):
        raise ValueError(f"spec {path} must be a mapping with input, model and output, got {type(raw).__name__}")
    try:
        return spec_class.model_validate(raw)
    except ValidationError as e:
        problems = "\n".join(
            f"  {'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()
        )
        raise ValueError(f"spec {path} is invalid:\n{problems}") from None


def main(argv: list[str] | None, prog: str, description: str, kind: JobKind) -> int:
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
    secrets: set[str] = set()
    try:
        spec = load_spec(args.spec, kind.spec_class)
        secrets = spec_secrets(spec)
        if args.verify:
            verified = verify_output(spec, kind)
            print(redact_text(verified.summary(), secrets))
            return EXIT_OK if verified.ok else EXIT_FAILED
        report = run_job(
            spec, kind, overwrite=args.overwrite, show_progress=not args.no_progress, retry_rejects=args.retry_rejects
        )
    except (PreflightError, VerifyError, ValueError) as e:  # found before any work: nothing was written
        print(f"error: {redact_text(str(e), secrets)}", file=sys.stderr)
        return EXIT_BAD_SPEC
    except JobFailed as e:
        print(f"job failed: {redact_text(str(e), secrets)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: committed shards are kept; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(redact_text(report.summary(), secrets))
    return EXIT_OK if report.succeeded else EXIT_FAILED
