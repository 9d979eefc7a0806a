"""OpenAPI: every operation documents the error envelope for the errors it can answer."""

import inspect

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import get_doc, get_override
from rest_framework import serializers
from rest_framework.schemas.utils import get_pk_description

from system_app.api.base import ID_PATTERN
from system_app.exceptions import CODES
from system_app.operation_docs import OPERATION_DOCS


class ErrorDetailSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True, help_text="the offending field or query parameter, if any")
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=sorted(set(CODES.values())))
    message = serializers.CharField()
    details = ErrorDetailSerializer(many=True)


class ErrorEnvelopeSerializer(serializers.Serializer):
    error = ErrorSerializer()


def own_doc(cls):
    """A class's own docstring: one inherited from an internal base class (such as
    AuditedModelViewSet or ValidatedModelSerializer) describes that base, not the
    operation or the object, and would end up in every generated client."""
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


class SchedulerAutoSchema(AutoSchema):
    def get_description(self):
        action = getattr(self.view, getattr(self.view, "action", self.method.lower()), None)
        # The action's own docstring, else the table's sentence for this
        # operation, else the view's docstring (which covers all its operations).
        return get_doc(action) or OPERATION_DOCS.get(self.get_operation_id(), "") or own_doc(type(self.view))

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if not get_override(serializer, "description") and not own_doc(type(serializer)):
            schema.pop("description", None)
        return schema

    def _resolve_path_parameters(self, variables):
        """A path id matched by ID_PATTERN is the integer id of the viewset's
        model (not of an action's own queryset, such as a task's runs), as
        it was before the pattern: drf-spectacular would make it a string."""
        parameters = super()._resolve_path_parameters(variables)
        model = getattr(getattr(type(self.view), "queryset", None), "model", None)
        for parameter in parameters:
            if model is not None and parameter["schema"].get("pattern") == f"^{ID_PATTERN}$":
                schema = self._map_model_field(model._meta.pk, direction=None)
                schema.pop("readOnly", None)
                if "description" not in schema:
                    parameter["description"] = get_pk_description(model, model._meta.pk)
                parameter["schema"] = schema
        return parameters

    def _get_pagination_parameters(self):
        """``page`` and ``page_size`` with the bounds PagePagination enforces (400 outside them)."""
        parameters = super()._get_pagination_parameters()
        paginator = self._get_paginator()
        for parameter in parameters:
            if parameter["name"] == getattr(paginator, "page_query_param", None):
                parameter["schema"]["minimum"] = 1
            elif parameter["name"] == getattr(paginator, "page_size_query_param", None):
                parameter["schema"]["minimum"] = 1
                if getattr(paginator, "max_page_size", None):
                    parameter["schema"]["maximum"] = paginator.max_page_size
        return parameters

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
        if method == "GET" and self._is_list_view() and self._get_paginator():
            codes.add(404)  # ?page= past the last page
        if method in ("POST", "PUT", "PATCH"):
            codes |= {409, 413, 415}
        if method == "DELETE":
            codes.add(409)
        return sorted(codes)
