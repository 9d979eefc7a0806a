"""Small helpers shared by the API tests: the error envelope, a valid task body."""

import json

from system_app.models import AuditEntry

ERROR_CODES = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_ERROR",
    403: "AUTHORIZATION_ERROR",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
}


def body_of(response):
    """The decoded JSON body, whether the response came from DRF or plain Django."""
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return json.loads(response.content)


def assert_error(response, status, code=None, field=None):
    """``response`` is an error in the SPEC §5 envelope with ``status``.

    ``field``, when given, must be named by one of the details (or an item of
    it: ``tags[0]`` counts for ``tags``).
    """
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = body_of(response)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == (code or ERROR_CODES[status]), error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], list), error
    for detail in error["details"]:
        assert set(detail) == {"field", "message"}, detail
    if field is not None:
        fields = [detail["field"] or "" for detail in error["details"]]
        assert any(name == field or name.startswith((f"{field}[", f"{field}.")) for name in fields), (field, error)
    return error


def task_body(**overrides):
    """A valid POST /api/tasks body; keyword arguments replace or add fields."""
    body = {
        "name": "nightly-export",
        "description": "exports the day's orders",
        "executor": "shell",
        "command": "echo hello",
        "schedule": "0 2 * * *",
    }
    body.update(overrides)
    return body


def audit_entries(action=None, object_type=None, object_id=None):
    entries = AuditEntry.objects.all()
    if action is not None:
        entries = entries.filter(action=action)
    if object_type is not None:
        entries = entries.filter(object_type=object_type)
    if object_id is not None:
        entries = entries.filter(object_id=str(object_id))
    return list(entries)


def last_audit(action, object_type=None, object_id=None):
    entries = audit_entries(action, object_type, object_id)
    assert entries, f"no {action} audit entry for {object_type} {object_id}"
    return entries[0]
