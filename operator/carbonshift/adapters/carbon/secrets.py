"""API credentials for carbon providers, kept out of logs, exceptions, reprs and results.

This module owns where keys come from (an environment variable, or a file such as a mounted Kubernetes
Secret named by `<VAR>_FILE` or an explicit path) and the `Secret` wrapper that hides them. Code gets the
plain value only through `Secret.reveal()`, at the moment it builds a request header.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

REDACTED = "***"


class SecretError(ValueError):
    """A configured secret could not be read (missing file, empty value). Never contains the value."""


class Secret:
    """A string that never shows itself: repr/str/format print `***`."""

    __slots__ = ("_value", "name", "source")

    def __init__(self, value: str, name: str = "secret", source: str | None = None) -> None:
        if not value:
            raise SecretError(f"{name} is empty")
        self._value = value
        self.name = name
        self.source = source or name  # where it came from, for error messages: a variable, or a file (Secret key)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name}={REDACTED})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("secrets are not picklable")


def describe_sources(secrets: Iterable[Secret | None]) -> str:
    """What a user should check when these credentials are refused, e.g. for a 401."""
    sources = [s.source for s in secrets if s is not None]
    return " and ".join(dict.fromkeys(sources))


def redact(text: str, secrets: Iterable[Secret | None]) -> str:
    """`text` with every secret value replaced by `***` (for response snippets in error messages)."""
    for secret in secrets:
        if secret is not None:
            text = text.replace(secret.reveal(), REDACTED)
    return text


def read_secret(
    name: str,
    env: Mapping[str, str],
    *,
    path: str | Path | None = None,
) -> Secret | None:
    """The secret `name` from, in order: an explicit file `path`, the file named by env `<name>_FILE`,
    or env `<name>`. None when none is configured; SecretError when a configured file is unreadable or
    empty. Trailing newlines of files (as written by `kubectl create secret`) are stripped."""
    file_path = path if path is not None else env.get(f"{name}_FILE")
    if file_path:
        location = Path(file_path)
        try:
            value = location.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read {name} from {location}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"{name} file {location} is empty")
        source = f"{name}, read from {location} (key {location.name} of the mounted provider Secret)"
        return Secret(value, name, source)
    value = env.get(name, "").strip()
    return Secret(value, name, f"the environment variable {name}") if value else None
