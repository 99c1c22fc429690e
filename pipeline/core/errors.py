"""The two ways a job stops early, and how a cause is told without leaking credentials."""

from __future__ import annotations

from pipeline.core.secrets import redact_text


class PreflightError(ValueError):
    """The spec cannot run: a missing checkpoint, unreachable storage, a conflicting output. Nothing was written."""


class JobFailed(RuntimeError):
    """The job ran but did not succeed (too many rejects, a shard that failed after retries)."""


def reason(e: BaseException) -> str:
    """One line on why ``e`` happened, with every URL and secret redacted."""
    return redact_text(f"{type(e).__name__}: {e}" if not isinstance(e, (OSError, ValueError)) or not str(e) else str(e))
