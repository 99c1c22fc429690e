"""Keeping credentials out of everything a job writes or prints.

A job still reads through the URIs it was given (a presigned URL needs its signature), but what it
records of them (provenance, manifests, key and source columns, stats, rejects' errors, messages) is
redacted: the query values and the user information of a URL are replaced, and every string in a
spec's ``storage_options`` is hidden wherever it would appear.
"""

from __future__ import annotations

import re
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

HIDDEN = "***"
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
MIN_SECRET_LENGTH = 4  # shorter option values (true, 3, us) are settings, and hiding them would garble text


def redact_uri(uri: str) -> str:
    """``uri`` without its user information and with each query value hidden; the fragment (a tar
    member) and the path stay. Anything that is not a URL with a query or user information is returned
    as it is."""
    if "://" not in uri or ("?" not in uri and "@" not in uri.split("://", 1)[1].split("/", 1)[0]):
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        f"{pair.split('=', 1)[0]}={HIDDEN}" if "=" in pair else HIDDEN for pair in parts.query.split("&") if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secret_values(value: Any) -> set[str]:
    """Every string inside an options mapping (credentials, tokens, headers) long enough to be one."""
    if isinstance(value, dict):
        return set().union(*(secret_values(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(secret_values(v) for v in value)) if value else set()
    return {value} if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH else set()


def spec_secrets(spec) -> set[str]:
    """The values of every ``*storage_options`` field of a spec, in any section."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if str(key).endswith("storage_options"):
                    found.update(secret_values(item))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(spec.model_dump())
    return found


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted and each secret hidden."""
    def one(match: re.Match) -> str:
        url = match.group(0)
        trail = len(url) - len(url.rstrip(".,:;)]"))  # sentence punctuation after a URL is not part of it
        return redact_uri(url[: len(url) - trail]) + url[len(url) - trail :]

    text = _URL.sub(one, text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text
