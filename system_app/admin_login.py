"""The admin's login form behind the same lockout as POST /api/auth/login.

Routed at /admin/login/ ahead of ``admin.site.urls``; everything but the
lockout is Django's own login view.
"""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache

from system_app.addresses import client_address
from system_app.logins import LoginFailure


@never_cache
def login(request, extra_context=None):
    """Django's admin login, refused with 429 while the username is locked out
    from this address; a failed attempt counts, a successful one clears."""
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    username, address = request.POST.get("username", ""), client_address(request)
    wait = LoginFailure.retry_after(username, address)
    if wait:
        context = {**admin.site.each_context(request), "title": "Too many failed logins", "retry_after": wait}
        response = TemplateResponse(request, "admin/login_locked.html", context, status=429)
        response["Retry-After"] = str(wait)
        return response
    response = admin.site.login(request, extra_context)
    if request.user.is_authenticated:
        LoginFailure.clear(username, address)
    else:
        LoginFailure.record(username, address)
    return response
