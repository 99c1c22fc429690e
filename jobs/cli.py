"""What every job's command line shares: loading a YAML spec, the modes, the exit codes."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from pipeline.core.errors import JobFailed, PreflightError
from pipeline.core.job import JobKind
from pipeline.core.schedule import run_job
from pipeline.core.secrets import redact_text, spec_secrets
from pipeline.core.verify import VerifyError, verify_output

EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_MEANINGS = {
    EXIT_OK: "success (with --verify: the output holds every input record exactly once)",
    EXIT_FAILED: "the job ran and failed (more rejects than max_failure_rate, a shard that failed after retries), "
    "or --verify found differences; committed shards are kept",
    EXIT_BAD_SPEC: "the spec or its inputs are unusable (a missing checkpoint, unreachable storage, an output of "
    "another spec), or another run is writing the output: found before any work started, nothing written",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C): committed shards are kept, and the same command resumes",
}
HELP_WIDTH = 100  # columns of the help's spec sections and exit codes
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


def _table(rows: list[tuple[str, str]], indent: int = 2) -> list[str]:
    """Two columns, the second wrapped to HELP_WIDTH under itself."""
    first = max(len(name) for name, _ in rows) + 2
    lines = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, HELP_WIDTH - indent - first) or [""]
        lines.append(" " * indent + name.ljust(first) + wrapped[0])
        lines += [" " * (indent + first) + line for line in wrapped[1:]]
    return lines


def spec_sections(spec_class: type[BaseModel]) -> list[str]:
    """The help's list of a spec's top-level sections (required ones first): what each is, and the fields
    of each section or the default of each setting."""
    rows = []
    fields = spec_class.model_fields
    for name in sorted(fields, key=lambda n: not fields[n].is_required()):
        info = fields[name]
        text = (info.description or "").rstrip(".") + "."
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            text += f" Fields: {', '.join(section.model_fields)}."
        elif not info.is_required() and "default" not in text.lower():
            default = info.get_default(call_default_factory=True)
            text += f" Default: {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}."
        rows.append((name + (" (required)" if info.is_required() else ""), text))
    return ["spec sections (a YAML mapping):", *_table(rows)]


def exit_codes() -> list[str]:
    return ["exit codes:", *_table([(str(code), meaning) for code, meaning in EXIT_MEANINGS.items()])]


def main(argv: list[str] | None, prog: str, description: str, kind: JobKind) -> int:
    """Run the job ``kind`` from the command line; ``description`` (the job module's docstring) heads --help."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=textwrap.dedent(description).strip(),
        epilog="\n".join([*spec_sections(kind.spec_class), "", *exit_codes()]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
