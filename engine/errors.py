"""One error hierarchy for Arbiter.

Every error the service can report is an :class:`ArbiterError` subclass carrying its HTTP status,
a stable problem ``type`` slug and, where it applies, a JSON pointer to the bad spot. Exactly one
place (``engine.api.problems``) renders them as ``application/problem+json``. Foreign exceptions
(redis, lupa, aiohttp) are wrapped at the boundary where they occur.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One located complaint: a JSON pointer into the offending document and what is wrong there."""

    pointer: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}


class ArbiterError(Exception):
    """Base of every error Arbiter raises on purpose."""

    status: int = 500
    slug: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, *, pointer: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://arbiter.dev/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.pointer is not None:
            body["pointer"] = self.pointer
        body.update(self.extra)
        return body


class BadRequest(ArbiterError):
    """The request itself is malformed: bad JSON, wrong types, missing fields."""

    status, slug, title = 400, "bad-request", "Bad request"


class PayloadTooLarge(ArbiterError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(ArbiterError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Unauthorized(ArbiterError):
    status, slug, title = 401, "unauthorized", "Missing or unknown API key"


class Forbidden(ArbiterError):
    status, slug, title = 403, "forbidden", "This key may not do that"


class NotFound(ArbiterError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(ArbiterError):
    status, slug, title = 409, "conflict", "Conflict"


class ValidationError(ArbiterError):
    """A document (model, experiment, event…) is invalid; ``problems`` lists every located fault."""

    status, slug, title = 422, "invalid", "Validation failed"

    def __init__(self, problems: list[Problem], *, detail: str | None = None) -> None:
        first = problems[0] if problems else Problem("", "invalid")
        super().__init__(
            detail or (first.message if len(problems) == 1 else f"{len(problems)} problems; first: {first.message}"),
            pointer=first.pointer,
        )
        self.problems = problems

    def problem(self) -> dict[str, Any]:
        body = super().problem()
        body["errors"] = [p.as_dict() for p in self.problems]
        return body


class FeelError(ArbiterError):
    """A FEEL expression or unary test could not be parsed (raised at compile time)."""

    status, slug, title = 422, "feel-syntax", "Invalid FEEL expression"

    def __init__(self, detail: str, *, source: str = "", position: int | None = None) -> None:
        super().__init__(detail)
        self.source = source
        self.position = position


class EvaluationError(ArbiterError):
    """A node failed while evaluating (UNIQUE overlap, ANY conflict, script error…).

    Raised inside a node; the plan executor records it in the trace and the node yields null or its
    fallback — it never escapes a decide request as a 500.
    """

    status, slug, title = 422, "evaluation", "Evaluation failed"


class Unavailable(ArbiterError):
    """A dependency (Redis, an external system) is down; writes are refused rather than dropped."""

    status, slug, title = 503, "unavailable", "Service unavailable"


# --- scripts and external calls (issue 4) --------------------------------------------------------
class ScriptError(EvaluationError):
    """A Lua script failed to compile or run: its message, the line where known, or a broken limit."""

    slug, title = "script", "Script failed"

    def __init__(self, detail: str, *, line: int | None = None, pointer: str | None = None) -> None:
        super().__init__(detail, pointer=pointer)
        self.line = line
        if line is not None:
            self.extra["line"] = line


class ExternalCallFailed(EvaluationError):
    """An external data call failed (refused, timed out, bad status, unreadable body); ``reason`` says how."""

    slug, title = "external-call", "External call failed"

    def __init__(self, detail: str, *, reason: str = "error") -> None:
        super().__init__(detail)
        self.reason = reason


# --- listen: Sitecore-compatible endpoints (issue 5) ----------------------------------------------
class SdkError(ArbiterError):
    """An error on a Sitecore-compatible endpoint, rendered in that API's own error shape (not problem+json).

    ``shape`` is ``"browser"`` (``{error_msg, moreInfo}``, the Cloud SDK's browser calls) or
    ``"personalize"`` (``{status, code, message, developerMessage, moreInfoUrl}``).
    """

    def __init__(self, status: int, detail: str, *, shape: str, code: str = "", pointer: str | None = None) -> None:
        super().__init__(detail, pointer=pointer)
        self.status = status
        self.shape = shape
        self.code = code or str(status)

    def problem(self) -> dict[str, Any]:
        message = self.detail if self.pointer is None else f"{self.detail} (at {self.pointer})"
        if self.shape == "browser":
            return {"error_msg": message, "moreInfo": MORE_INFO}
        return {
            "status": self.status,
            "code": self.code,
            "message": message,
            "developerMessage": message,
            "moreInfoUrl": MORE_INFO,
        }


MORE_INFO = "https://arbiter.dev/docs/events"
