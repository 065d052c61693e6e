"""The errors a task can meet on its way in, as one small typed tree.

Each class carries the HTTP status and the protocol's error code it maps to
(task-protocol.md §5); the HTTP layer maps them in one place. The docstring is
the generic message; ``detail`` says what exactly was wrong and names the field.
"""

from __future__ import annotations


class TaskError(Exception):
    """The task was refused."""

    status: int = 400
    code: str = "malformed"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or (self.__doc__ or "").strip()
        super().__init__(self.detail)


class Malformed(TaskError):
    """Not a JWS, bad base64, not UTF-8 JSON, or duplicate keys."""

    status = 400
    code = "malformed"


class BadSignature(TaskError):
    """The signature does not verify."""

    status = 401
    code = "bad_signature"


class UnknownKey(TaskError):
    """The key id is unknown, revoked or outside its validity window."""

    status = 401
    code = "unknown_key"


class Forbidden(TaskError):
    """The sender may not do this."""

    status = 403
    code = "forbidden"


class Conflict(TaskError):
    """The task conflicts with one already stored."""

    status = 409
    code = "conflict"


class TooLarge(TaskError):
    """The body is over the size limit."""

    status = 413
    code = "too_large"


class UnsupportedMediaType(TaskError):
    """The body is not application/jose."""

    status = 415
    code = "unsupported_media_type"


class InvalidTask(TaskError):
    """The task has a schema or value error."""

    status = 422
    code = "invalid_task"


class RateLimited(TaskError):
    """Too many requests from this client."""

    status = 429
    code = "rate_limited"


class NotFound(TaskError):
    """No such task."""

    status = 404
    code = "not_found"
