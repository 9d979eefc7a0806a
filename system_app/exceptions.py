"""The API's error envelope (SPEC §5).

Every error under /api has the shape
``{"error": {"code", "message", "details": [{"field", "message"}]}}``: DRF's
exceptions through ``api_exception_handler``, and everything Django answers
outside DRF (unknown URLs, oversized bodies, crashes) through
``system_app.middleware.ApiGuardMiddleware``.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error

from system_app.validation import printable

logger = logging.getLogger("scheduler.api")

CODES = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_ERROR",
    403: "AUTHORIZATION_ERROR",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}

DEFAULT_MESSAGES = {
    400: "The request is invalid.",
    401: "Authentication credentials were not provided or are invalid.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "This method is not allowed here.",
    409: "The request conflicts with the current state.",
    413: "The request body is too large.",
    415: "Send JSON with Content-Type: application/json.",
    429: "Too many requests; slow down.",
    500: "An internal error occurred; it has been logged.",
}


class InvalidQuery(exceptions.ValidationError):
    """A bad query-string parameter, reported against its name."""

    def __init__(self, field, message):
        super().__init__({field: [message]})


class Conflict(Exception):
    """A change the current state forbids: a name already taken, a transition
    from the wrong status, a row still in use. Raised alike by models, views
    and serializers; the API answers it with 409 CONFLICT and its message, the
    admin shows the message."""


def envelope(status_code, message=None, details=None):
    # Messages may quote the input ("'\ud800' is not one of …"); a lone surrogate
    # cannot be written as UTF-8, so it is shown as U+FFFD rather than crash the answer.
    details = [
        {key: printable(value) if isinstance(value, str) else value for key, value in detail.items()}
        for detail in details or []
    ]
    return {
        "error": {
            "code": CODES.get(status_code, "INTERNAL_ERROR" if status_code >= 500 else "VALIDATION_ERROR"),
            "message": printable(message or DEFAULT_MESSAGES.get(status_code, "Error.")),
            "details": details,
        }
    }


def error_response(status_code, message=None, details=None, headers=None):
    """A plain Django JSON response in the envelope (for code outside DRF)."""
    response = JsonResponse(envelope(status_code, message, details), status=status_code)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def flatten_details(data, prefix=""):
    """DRF's nested error dict/list as a flat [{"field", "message"}] list."""
    details = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("non_field_errors", "__all__"):
                field = prefix or None
            elif isinstance(key, int):
                # A ListField's errors are keyed by item index: "permissions[0]".
                field = f"{prefix}[{key}]"
            else:
                field = f"{prefix}.{key}" if prefix else str(key)
            details.extend(flatten_details(value, field or ""))
    elif isinstance(data, list):
        if all(not isinstance(item, (dict, list)) for item in data):
            details.extend({"field": prefix or None, "message": str(item)} for item in data)
        else:
            for index, item in enumerate(data):
                details.extend(flatten_details(item, f"{prefix}[{index}]"))
    else:
        details.append({"field": prefix or None, "message": str(data)})
    return details


def summary(details, fallback):
    if not details:
        return fallback
    first = details[0]
    text = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    if len(details) > 1:
        text += f" (and {len(details) - 1} more)"
    return text


def api_exception_handler(exc, context):
    if isinstance(exc, IntegrityError):
        # A race lost against a concurrent write (e.g. two creates of one name).
        exc = Conflict("The change conflicts with existing data (a unique value is already taken).")
    if isinstance(exc, Conflict):
        exc = exceptions.APIException(str(exc) or DEFAULT_MESSAGES[409])
        exc.status_code = status.HTTP_409_CONFLICT
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))

    if not isinstance(exc, exceptions.APIException):
        view = context.get("view")
        logger.exception("Unhandled error in %s", type(view).__name__ if view else "API view")
        return Response(envelope(500), status=500)

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    code = exc.status_code
    if isinstance(exc, exceptions.ValidationError):
        details = flatten_details(exc.detail)
        message = summary(details, DEFAULT_MESSAGES[400])
    elif isinstance(exc, exceptions.ParseError):
        details = []
        message = "The request body is not valid JSON." if "JSON" in str(exc.detail) else str(exc.detail)
    elif isinstance(exc, exceptions.Throttled):
        details = []
        message = f"Too many requests; retry in {int(exc.wait or 1)} s." if exc.wait else DEFAULT_MESSAGES[429]
    else:
        details = []
        message = str(exc.detail) if not isinstance(exc.detail, (dict, list)) else DEFAULT_MESSAGES.get(code)
    return Response(envelope(code, message, details), status=code, headers=headers)
