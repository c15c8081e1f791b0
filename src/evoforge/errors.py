"""The exception tree, drawn once.

EvoforgeError
├── InputError          bad seed / record file: names the file, line and field
├── ConfigError         bad flag, spec or template; says how to fix it
├── MissingDependency   an optional extra is not installed; names the extra
├── LLMError            raised by backends, classified for the engine's policy
│   ├── TransientError      retried (connection, timeout, 408, 409, 429, 5xx)
│   ├── RequestRejected     not retried; the record becomes a rejection
│   └── QuotaExhausted      the account is out of credit; the run stops
└── RunStopped          the run stops cleanly (budget, quota, long Retry-After);
                        everything finished so far is kept and a re-run resumes
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class EvoforgeError(Exception):
    """Base class of every error evoforge raises on purpose."""


class InputError(EvoforgeError):
    """A problem with an input file, located as precisely as possible."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.unit = unit  # "line" for JSONL/CSV, "item" for a JSON array, "row" for tables
        self.detail = message
        super().__init__(self.located(message))

    def located(self, message: str) -> str:
        where = []
        if self.path:
            where.append(str(self.path))
        if self.line is not None:
            where.append(f"{self.unit} {self.line}")
        prefix = " ".join(where)
        if self.field:
            message = f'field "{self.field}" {message}'
        return f"{prefix}: {message}" if prefix else message


class ConfigError(EvoforgeError):
    """A flag, spec, recipe or template that cannot be used as given."""


class MissingDependency(EvoforgeError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed. Install it with: pip install 'evoforge[{extra}]'"
        )


class LLMError(EvoforgeError):
    """A failed model call, already classified by the backend."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TransientError(LLMError):
    """Worth retrying: connection errors, timeouts, 408, 409, 429 and 5xx.

    ``retry_after`` is the server's requested wait in seconds, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)

    @property
    def is_rate_limit(self) -> bool:
        return self.status == 429


class RequestRejected(LLMError):
    """Not worth retrying (400, 401, 403, 404, 422, context length, bad JSON).

    ``reason`` is the rejection's reason code, e.g. ``http_400`` or
    ``context_length_exceeded``.
    """

    def __init__(self, reason: str, message: str, *, status: int | None = None) -> None:
        self.reason = reason
        super().__init__(message, status=status)


class QuotaExhausted(LLMError):
    """The provider says the account has no credit left (``insufficient_quota``)."""


class RunStopped(EvoforgeError):
    """The run stopped before the end; finished work is kept, a re-run resumes."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


# Credentials as they show up in text: a password in a URL (``https://user:pw@host``),
# ``key=value`` for secret-looking names (``--llm-arg api_key=...``), a bearer token,
# and OpenAI-style keys (``sk-...``).
_URL_PASSWORD = re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@\"']+:)[^/\s@\"']+@")
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<keep>\b[\w-]*(?:api[_-]?key|secret|password|passwd|access[_-]?token)"
    r"\"?\s*[=:]\s*\"?)"
    r"(?!\*\*\*)[^\s\"',}]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<keep>\bBearer\s+)[^\s\"']+", re.IGNORECASE)
_OPENAI_KEY = re.compile(r"(?P<keep>\bsk-)[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    """``text`` with credentials masked as ``***``; used on everything evoforge writes
    or prints that may quote a URL, a command line or a server's error message."""
    text = _URL_PASSWORD.sub(r"\g<keep>***@", text)
    text = _SECRET_ASSIGNMENT.sub(r"\g<keep>***", text)
    text = _BEARER.sub(r"\g<keep>***", text)
    return _OPENAI_KEY.sub(r"\g<keep>***", text)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'jsonl'?"`` when ``value`` is close to one of ``choices``."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def yaml_problem(exc: BaseException) -> str:
    """A YAML parser's error on one line: ``line 3, column 7: found unexpected end of
    stream`` (PyYAML's own text spans several, with a caret drawing)."""
    mark = getattr(exc, "problem_mark", None)
    first_line = next(iter(str(exc).splitlines()), "")
    problem = getattr(exc, "problem", None) or first_line or type(exc).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())
