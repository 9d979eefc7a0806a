"""Refuse addresses that no view can answer safely: NUL characters in the path
or the query string.

PostgreSQL's text columns cannot hold NUL, and psycopg raises when one is sent
in a parameter, so a worker id, an admin object id, a list filter or a search
term with ``%00`` in it would be a 500 wherever it reaches a query. No address
of ours ever holds a NUL, so it is refused once, here, for the API, the admin
and every page alike, before any view runs: a path with one names nothing
(404), a query parameter with one is invalid (400). Lone surrogates cannot
reach this far: Django decodes the address as UTF-8, replacing invalid bytes.
"""

from django.http import HttpResponseBadRequest, HttpResponseNotFound

from system_app.exceptions import error_response

NUL = "\x00"


def is_api(request):
    return request.path == "/api" or request.path.startswith("/api/")


class RejectNulMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if NUL in request.path:
            if is_api(request):
                return error_response(404)
            return HttpResponseNotFound("Not found: the address contains a NUL character.", content_type="text/plain")
        for name, values in request.GET.lists():
            if NUL in name or any(NUL in value for value in values):
                field = name.replace(NUL, "\\x00")
                message = "Null characters are not allowed."
                if is_api(request):
                    return error_response(400, f"{field}: {message}", [{"field": field, "message": message}])
                return HttpResponseBadRequest(f"{field}: {message}", content_type="text/plain")
        return self.get_response(request)
