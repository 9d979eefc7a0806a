"""The http executor: one request with urllib.request.

parameters: ``method`` (default GET), ``headers``, ``body`` (a string is sent
as is, an object or list as JSON), ``expected_status`` (a list of codes; by
default any 2xx). The response body's tail goes to stdout, "HTTP <code>" to
the result.

Addresses in HTTP_EXECUTOR_BLOCKED_NETWORKS (link-local, cloud metadata) are
refused: each connection, the first and every redirect hop's, resolves the
host, checks every address it resolves to, and connects to the checked address
itself, so a DNS answer that changes between check and connect (rebinding)
changes nothing. Only http and https are followed, and proxies from the
environment are not used (a proxy would make the connection, unchecked).
"""

import json
import urllib.error
import urllib.request

from django.conf import settings

from tasks_app import reach
from workers_app.executors import CANCELLED, TIMED_OUT, Outcome, run_in_thread
from workers_app.executors.output import TailBuffer

READ_CHUNK = 64 * 1024


def build_request(url, parameters):
    method = str(parameters.get("method") or "GET").upper()
    headers = {str(key): str(value) for key, value in (parameters.get("headers") or {}).items()}
    body = parameters.get("body")
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            if not any(key.lower() == "content-type" for key in headers):
                headers["Content-Type"] = "application/json"
        else:
            data = str(body).encode()
    if not any(key.lower() == "user-agent" for key in headers):
        headers["User-Agent"] = f"task-scheduler/{settings.VERSION}"
    return urllib.request.Request(url, data=data, headers=headers, method=method)


def status_ok(status, expected):
    if expected:
        return status in {int(code) for code in expected}
    return 200 <= status < 300


def run(spec, should_cancel, report_output=None):
    parameters = spec.parameters or {}
    body = TailBuffer(spec.output_limit)
    try:
        request = build_request(spec.command, parameters)
    except (ValueError, TypeError) as error:
        return Outcome(status="failed", error_message=f"invalid request: {error}", execution_time=0.0)

    opener = reach.guarded_opener(list(settings.HTTP_EXECUTOR_BLOCKED_NETWORKS))

    def call():
        try:
            response = opener.open(request, timeout=spec.timeout_seconds)
        except urllib.error.HTTPError as error:  # 4xx/5xx: still a response to judge
            response = error
        with response:
            while chunk := response.read(READ_CHUNK):
                body.write(chunk)
            return response.status

    how, box = run_in_thread(call, spec.timeout_seconds, should_cancel, name=f"run-{spec.run_id}")
    outcome = Outcome(status="completed", stdout=body.text())
    if how == TIMED_OUT:
        outcome.status = "timeout"
        outcome.error_message = f"no complete response within {spec.timeout_seconds:g} s"
    elif how == CANCELLED:
        outcome.status = "cancelled"
        outcome.error_message = "cancelled by request"
    elif "error" in box:
        error = box["error"]
        reason = getattr(error, "reason", None) or error
        outcome.status = "timeout" if isinstance(reason, TimeoutError) else "failed"
        if isinstance(reason, reach.BlockedAddress):
            outcome.error_message = str(reason)
        else:
            outcome.error_message = f"request failed: {type(reason).__name__}: {reason}"
    else:
        status = box["value"]
        outcome.result = f"HTTP {status}"
        if not status_ok(status, parameters.get("expected_status")):
            outcome.status = "failed"
            expected = parameters.get("expected_status") or "2xx"
            outcome.error_message = f"unexpected HTTP status {status} (expected {expected})"
    return outcome
