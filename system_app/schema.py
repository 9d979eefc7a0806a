"""OpenAPI: every operation documents the error envelope for the errors it can answer."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from system_app.exceptions import CODES


class ErrorDetailSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="the offending field or query parameter, if any")
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=sorted(set(CODES.values())))
    message = serializers.CharField()
    details = ErrorDetailSerializer(many=True)


class ErrorEnvelopeSerializer(serializers.Serializer):
    error = ErrorSerializer()


class SchedulerAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            responses.setdefault(str(code), self._get_response_for_code(ErrorEnvelopeSerializer, str(code)))
        return responses

    def _error_codes(self):
        method = self.method.upper()
        codes = {400, 401, 429, 500}
        if self.get_auth():
            codes.add(403)
        if "{" in self.path:
            codes.add(404)
        if method in ("POST", "PUT", "PATCH"):
            codes |= {409, 413, 415}
        if method == "DELETE":
            codes.add(409)
        return sorted(codes)
