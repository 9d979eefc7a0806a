"""Bearer authentication: an API key (scheduler_…) or a JWT access token."""

import time

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication

from system_app.models import API_KEY_PREFIX, ApiKey, user_permissions
from system_app.principals import PRINCIPALS, private_copy


def bearer_token(request):
    header = authentication.get_authorization_header(request).split()
    if len(header) != 2 or header[0].lower() != b"bearer":
        return None
    try:
        return header[1].decode()
    except UnicodeDecodeError:
        raise exceptions.AuthenticationFailed(_("The bearer token is not valid text.")) from None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer scheduler_…``; request.auth is the ApiKey."""

    def authenticate(self, request):
        token = bearer_token(request)
        if not token or not token.startswith(API_KEY_PREFIX):
            return None
        api_key = ApiKey.authenticate(token)
        if api_key is None:
            raise exceptions.AuthenticationFailed(_("The API key is unknown, revoked or expired."))
        return api_key.created_by, api_key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class BearerJWTAuthentication(JWTAuthentication):
    """simplejwt, with a one-sentence error instead of its nested detail.

    A token seen in the last few seconds skips the signature check and the
    user's row: its user comes from this process's memory of principals
    (system_app.principals), never past the token's own expiry.
    """

    def authenticate(self, request):
        try:
            header = self.get_header(request)
            raw_token = None if header is None else self.get_raw_token(header)
            if raw_token is None:
                return None
            cache_key = PRINCIPALS.digest("jwt:", raw_token)
            cached = PRINCIPALS.get(cache_key)
            if cached is None:
                generation = PRINCIPALS.generation
                token = self.get_validated_token(raw_token)
                user = self.get_user(token)
                user_permissions(user)  # read once, kept on the user
                cached = (user, token)
                PRINCIPALS.put(cache_key, cached, generation, seconds=token.payload["exp"] - time.time())
        except exceptions.AuthenticationFailed as error:
            raise exceptions.AuthenticationFailed(_("The access token is invalid or expired.")) from error
        user, token = cached
        return private_copy(user), token


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "system_app.authentication.ApiKeyAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}


class BearerJWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "system_app.authentication.BearerJWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT or API key"}


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """The admin's session, for the few read-only endpoints the admin's own
    pages call (the task form's live schedule preview). Staff only: a session
    of a user who may not use the admin authenticates nothing here. DRF checks
    the CSRF token on unsafe methods; the endpoints using this are GET-only."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None or not result[0].is_staff:
            return None
        return result


class StaffSessionAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "system_app.authentication.StaffSessionAuthentication"
    name = "adminSession"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "The Django admin's session of a staff user (used by the admin's own pages).",
        }
