"""What every API view shares: strict field types, model validation, audit."""

import copy
import math

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from drf_spectacular.utils import extend_schema_field
from rest_framework import fields, mixins, serializers, viewsets
from rest_framework.serializers import as_serializer_error

from system_app import audit
from system_app.validation import storable_json_error


class StrictCharField(serializers.CharField):
    """A string, and only a string: 123 or true is an error, not "123"."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON number with no fraction: "5", 5.5 and true are errors."""

    default_error_messages = {"invalid": "Must be a whole number."}

    def to_internal_value(self, data):
        if (
            isinstance(data, bool)
            or not isinstance(data, (int, float))
            or (isinstance(data, float) and not data.is_integer())
        ):
            self.fail("invalid")
        return super().to_internal_value(int(data))


class StrictFloatField(serializers.FloatField):
    """A finite JSON number: Python's parser reads 1e400 as infinity, which no
    JSON renderer can write back."""

    default_error_messages = {"invalid": "Must be a number."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        try:
            # An integer of 400 digits is finite, but no float: float() overflows.
            data = float(data)
        except OverflowError:
            self.fail("invalid")
        if not math.isfinite(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StorableJSONField(serializers.JSONField):
    def to_internal_value(self, data):
        problem = storable_json_error(data)
        if problem:
            raise serializers.ValidationError(problem)
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


# Typed in the schema, so generated clients see a list or an object, not "any".
@extend_schema_field({"type": "array", "items": {}})
class JSONListField(StorableJSONField):
    default_error_messages = {"invalid": "Must be a list."}

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(StorableJSONField):
    default_error_messages = {"invalid": "Must be an object."}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid")
        return super().to_internal_value(data)


class ValidatedModelSerializer(serializers.ModelSerializer):
    """Strict JSON types, and the model's own ``clean()`` on every write, so the
    API and the admin enforce the same invariants."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.IntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
        models.PositiveSmallIntegerField: StrictIntegerField,
        models.SmallIntegerField: StrictIntegerField,
        models.BigIntegerField: StrictIntegerField,
        models.FloatField: StrictFloatField,
        models.BooleanField: StrictBooleanField,
    }
    # Fields the model stores as JSON lists / objects.
    json_list_fields = ()
    json_object_fields = ()

    def build_standard_field(self, field_name, model_field):
        field_class, kwargs = super().build_standard_field(field_name, model_field)
        if field_name in self.json_list_fields:
            field_class = JSONListField
        elif field_name in self.json_object_fields:
            field_class = JSONObjectField
        if issubclass(field_class, fields.ChoiceField):
            allowed = ", ".join(str(value) for value, _label in model_field.choices)
            kwargs.setdefault("error_messages", {})["invalid_choice"] = f'"{{input}}" is not one of: {allowed}.'
        return field_class, kwargs

    # Fields beyond the input that the model's clean() may set (read-only in
    # the API), which the write saves as clean() left them.
    derived_fields = ()

    def candidate(self, attrs):
        """The instance to clean: a copy of the one updated (or a new one) with
        ``attrs`` set, many-to-many fields aside."""
        instance = copy.copy(self.instance) if self.instance is not None else self.Meta.model()
        many_to_many = {f.name for f in self.Meta.model._meta.many_to_many}
        for key, value in attrs.items():
            if key not in many_to_many:
                setattr(instance, key, value)
        return instance

    def validate(self, attrs):
        attrs = super().validate(attrs)
        instance = self.candidate(attrs)
        try:
            instance.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(as_serializer_error(error)) from None
        many_to_many = {f.name for f in self.Meta.model._meta.many_to_many}
        for key in [*attrs, *self.derived_fields]:
            if key not in many_to_many and hasattr(instance, key):
                attrs[key] = getattr(instance, key)
        return attrs


# The id in a path such as /api/tasks/{id}: ASCII digits only, as in query
# parameters; int() would also read "١" or "𝟏" as 1.
ID_PATTERN = "[0-9]+"


class AuditedModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """A model viewset whose every write leaves an AuditEntry in the same transaction."""

    audit_ignore = ("updated_at", "next_run_at")

    @transaction.atomic
    def perform_create(self, serializer):
        instance = serializer.save()
        changes = {k: v for k, v in serializer.data.items() if k not in self.audit_ignore}
        audit.record(self.request, "create", instance, changes=changes)

    @transaction.atomic
    def perform_update(self, serializer):
        before = dict(self.get_serializer(serializer.instance).data)
        instance = serializer.save()
        changes = audit.diff(before, dict(serializer.data))
        for key in self.audit_ignore:
            changes.pop(key, None)
        audit.record(self.request, "update", instance, changes=changes)

    @transaction.atomic
    def perform_destroy(self, instance):
        audit.record(self.request, "delete", instance)
        instance.delete()
