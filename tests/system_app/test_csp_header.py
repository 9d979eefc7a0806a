"""The policy built once per process gives django-csp's headers, on the same
conditions, and follows changes of the settings."""

import pytest
from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.decorators import csp_exempt, csp_update
from csp.middleware import CSPMiddleware
from django.http import HttpResponse, JsonResponse
from django.test import RequestFactory, override_settings

from system_app.middleware import FixedPolicyCSPMiddleware

RESPONSES = {
    "json": lambda request: JsonResponse({"ok": True}),
    "html": lambda request: HttpResponse("<p>hi</p>"),
    "not found": lambda request: HttpResponse(status=404),
    "own header": lambda request: _with_header(HttpResponse(), HEADER, "default-src 'none'"),
    "exempt": csp_exempt()(lambda request: HttpResponse()),
    "updated": csp_update({"img-src": ["https://example.invalid"]})(lambda request: HttpResponse()),
    "nonce": lambda request: HttpResponse(str(request.csp_nonce)),
}


def _with_header(response, header, value):
    response[header] = value
    return response


def headers(middleware_class, view, path="/api/tasks"):
    response = middleware_class(view)(RequestFactory().get(path))
    return {name: response.get(name) for name in (HEADER, HEADER_REPORT_ONLY)}


@pytest.mark.parametrize("kind", sorted(RESPONSES))
@pytest.mark.parametrize("path", ["/api/tasks", "/admin/", "/excluded/page"])
def test_it_sets_the_headers_django_csp_sets(kind, path):
    report_only = {"DIRECTIVES": {"default-src": ["'self'"]}, "EXCLUDE_URL_PREFIXES": ["/excluded"]}
    with override_settings(CONTENT_SECURITY_POLICY_REPORT_ONLY=report_only):
        fixed = headers(FixedPolicyCSPMiddleware, RESPONSES[kind], path)
        assert fixed == headers(CSPMiddleware, RESPONSES[kind], path)
    if kind in ("json", "html") and path == "/api/tasks":
        assert fixed[HEADER] and "frame-ancestors 'none'" in fixed[HEADER]
        assert fixed[HEADER_REPORT_ONLY] == "default-src 'self'"


def test_it_follows_a_change_of_the_policy():
    view = RESPONSES["json"]
    before = headers(FixedPolicyCSPMiddleware, view)[HEADER]
    with override_settings(CONTENT_SECURITY_POLICY={"DIRECTIVES": {"default-src": ["'none'"]}}):
        assert headers(FixedPolicyCSPMiddleware, view)[HEADER] == "default-src 'none'"
    assert headers(FixedPolicyCSPMiddleware, view)[HEADER] == before
