"""The read side of a serializer without DRF's per-field machinery.

A list of 20 tasks through ``TaskSerializer(many=True)`` costs more CPU than
the rest of the request together: the serializer builds its 36 fields anew on
every request (``ModelSerializer.get_fields`` reads the model's metadata and
deep-copies the declared fields), then calls ``get_attribute`` and
``to_representation`` of each field for each row, through several layers of
generic code. ``FastRepresentation`` reads the serializer's fields once per
process and turns each into one plain function from a model instance to the
value the serializer would give; fields it does not know keep the serializer's
own code. The output is the serializer's, key for key and value for value
(tests/system_app/test_representation.py compares them over varied rows).

Only for serializers that do not override ``to_representation``: those shape
their output in code this module does not see.
"""

from operator import attrgetter

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.utils import timezone
from rest_framework import ISO_8601, fields, relations, serializers
from rest_framework.response import Response
from rest_framework.settings import api_settings

BATCH = object()  # a reader marker: the value comes from the page's batch


def _plain(field, cls):
    """Whether ``field`` renders exactly as ``cls`` does (no override on the way)."""
    return isinstance(field, cls) and type(field).to_representation is cls.to_representation


def _concrete_attname(model, source):
    """The model attribute a simple ``source`` reads, or None when it is not a
    concrete column (a property, a relation's object, a method)."""
    if "." in source:
        return None
    try:
        model_field = model._meta.get_field(source)
    except FieldDoesNotExist:
        return None
    if not getattr(model_field, "concrete", False) or model_field.many_to_many:
        return None
    return model_field.attname


def _datetime_converter(field):
    """DRF's ISO 8601 output: in the current time zone, ``Z`` for UTC."""
    if getattr(field, "format", api_settings.DATETIME_FORMAT) != ISO_8601 or hasattr(field, "timezone"):
        return None

    def convert(value, zone):
        if not value:
            return None
        if isinstance(value, str):
            return value
        if zone is not None:
            value = value.astimezone(zone) if timezone.is_aware(value) else field.enforce_timezone(value)
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return convert


def _converter(field):
    """``convert(value, zone)`` for a non-null value of ``field``, or None to keep its own code."""
    if isinstance(field, fields.DateTimeField) and _plain(field, fields.DateTimeField):
        return _datetime_converter(field)
    if _plain(field, fields.ChoiceField):
        choices = field.choice_strings_to_values
        return lambda value, zone: value if value in ("", None) else choices.get(str(value), value)
    if _plain(field, fields.CharField):
        return lambda value, zone: value if type(value) is str else str(value)
    big_as_number = _plain(field, fields.BigIntegerField) and not getattr(
        field, "coerce_to_string", api_settings.COERCE_BIGINT_TO_STRING
    )
    if big_as_number or _plain(field, fields.IntegerField):
        return lambda value, zone: value if type(value) is int else int(value)
    if _plain(field, fields.FloatField):
        return lambda value, zone: float(value)
    if _plain(field, fields.BooleanField):
        return lambda value, zone: value if type(value) is bool else field.to_representation(value)
    if (_plain(field, fields.JSONField) and not field.binary) or _plain(field, fields.ReadOnlyField):
        return lambda value, zone: value
    return None


def _slug_key(field, model):
    """The ``values()`` key of a read-only SlugRelatedField over a foreign key
    (``created_by__username``), or None when the field is anything else."""
    if not (
        isinstance(field, relations.SlugRelatedField)
        and type(field).to_representation is relations.SlugRelatedField.to_representation
        and type(field).get_attribute is relations.RelatedField.get_attribute
        and len(field.source_attrs) == 1
        and "." not in field.slug_field
    ):
        return None
    try:
        model_field = model._meta.get_field(field.source_attrs[0])
    except FieldDoesNotExist:
        return None
    if not (model_field.many_to_one or model_field.one_to_one) or not model_field.concrete:
        return None
    return f"{model_field.name}__{field.slug_field}"


def _identity(value, zone):
    return value


class FastRepresentation:
    """``serializer_class``'s output for model instances, or for the rows of
    ``values()`` (dicts, which cost no model instances), computed with one
    precompiled reader per field. Built on first use, then shared by every
    request of the process (it holds no per-request state)."""

    def __init__(self, serializer_class, batch=None):
        """``batch`` maps field names to functions that read that field for a
        whole page at once: ``function(primary keys) -> {primary key: value}``,
        one query for the page instead of a prefetch or a query per row."""
        if serializer_class.to_representation is not serializers.Serializer.to_representation:
            raise TypeError(f"{serializer_class.__name__} overrides to_representation")
        self.serializer_class = serializer_class
        self.batch = batch or {}
        self._readers = None

    def readers(self):
        """(instance readers, dict readers or None, the ``values()`` keys or None)."""
        if self._readers is None:
            self._readers = self._build()
        return self._readers

    def _build(self):
        serializer = self.serializer_class()
        model = serializer.Meta.model
        readers, dict_readers = [], []
        for field in serializer._readable_fields:
            name = field.field_name
            if name in self.batch:
                readers.append((name, BATCH, self.batch[name]))
                dict_readers.append((name, BATCH, self.batch[name]))
                continue
            attname = None
            if len(field.source_attrs) == 1:
                attname = _concrete_attname(model, field.source_attrs[0])
            if (
                attname is not None
                and isinstance(field, relations.PrimaryKeyRelatedField)
                and type(field).to_representation is relations.PrimaryKeyRelatedField.to_representation
                and field.pk_field is None
            ):
                # The foreign key's column holds the id the field would read from the object.
                readers.append((name, attrgetter(attname), _identity))
                dict_readers.append((name, attname, _identity))
                continue
            convert = _converter(field) if attname is not None else None
            if convert is not None:
                readers.append((name, attrgetter(attname), convert))
                dict_readers.append((name, attname, convert))
                continue
            # The serializer's own code for an instance; a dict has no object to give it.
            readers.append((name, None, field))
            slug_key = _slug_key(field, model)
            dict_readers.append((name, slug_key, _identity) if slug_key else None)
        if None in dict_readers:
            return readers, None, None
        keys = [key for _name, key, _convert in dict_readers if key is not BATCH]
        pk = model._meta.pk.attname
        return readers, dict_readers, tuple(dict.fromkeys([pk, *keys]))

    def reads_values(self):
        """Whether ``many`` reads ``values()`` rows (``values_of`` gives them)."""
        return self.readers()[2] is not None

    def values_of(self, queryset):
        """``queryset`` as the ``values()`` rows ``many`` reads, when every field
        can be read from one; else ``queryset`` itself."""
        keys = self.readers()[2]
        return queryset if keys is None else queryset.values(*keys)

    def one(self, instance):
        return self.many([instance])[0]

    def many(self, rows):
        """The representation of model instances, or of dicts from ``values_of``."""
        readers, dict_readers, keys = self.readers()
        zone, rows = _zone(), list(rows)
        if rows and isinstance(rows[0], dict):
            pk = keys[0]
            batches = {name: function([row[pk] for row in rows]) for name, function in self.batch.items()}
            return [self._dict_row(row, row[pk], dict_readers, zone, batches) for row in rows]
        batches = {name: function([row.pk for row in rows]) for name, function in self.batch.items()}
        return [self._row(instance, readers, zone, batches) for instance in rows]

    @staticmethod
    def _dict_row(values, pk, readers, zone, batches):
        row = {}
        for name, key, convert in readers:
            if key is BATCH:
                row[name] = batches[name][pk]
                continue
            value = values[key]
            row[name] = None if value is None else convert(value, zone)
        return row

    @staticmethod
    def _row(instance, readers, zone, batches):
        row = {}
        for name, read, convert in readers:
            if read is BATCH:
                row[name] = batches[name][instance.pk]
                continue
            if read is not None:
                value = read(instance)
                row[name] = None if value is None else convert(value, zone)
                continue
            # The serializer's own way, as Serializer.to_representation does it.
            try:
                attribute = convert.get_attribute(instance)
            except fields.SkipField:
                continue
            check = attribute.pk if isinstance(attribute, relations.PKOnlyObject) else attribute
            row[name] = None if check is None else convert.to_representation(attribute)
        return row


def _zone():
    """The zone DRF's DateTimeField renders in (DateTimeField.default_timezone)."""
    return timezone.get_current_timezone() if settings.USE_TZ else None


class FastReadMixin:
    """``list`` and ``retrieve`` of a viewset through FastRepresentations of
    its read serializers; writes keep the serializer."""

    list_representation = None
    detail_representation = None

    def list(self, request, *args, **kwargs):
        if self.list_representation is None:
            return super().list(request, *args, **kwargs)

        def build():
            return self.list_representation.values_of(self.filter_queryset(self.get_queryset()))

        shape = listing_shape(self) if self.list_representation.reads_values() else None
        page = paginate_listing(self, build, shape)
        if page is None:
            return Response(self.list_representation.many(build()))
        return self.get_paginated_response(self.list_representation.many(page))

    def retrieve(self, request, *args, **kwargs):
        if self.detail_representation is None:
            return super().retrieve(request, *args, **kwargs)
        return Response(self.detail_representation.one(self.get_object()))


def listing_shape(view, *extra):
    """The shape key of a viewset's listing: what its page query depends on
    besides the values passed apart (system_app.compiled_queries). A listing
    is built from the view, its action and the query string alone."""
    params = tuple(sorted((name, tuple(values)) for name, values in view.request.query_params.lists()))
    return (type(view).__qualname__, view.action, params, *extra)


def paginate_listing(view, build, key, values=()):
    """The view's page of ``build(*values)``, a ``values()`` queryset: through
    SQL compiled once per shape ``key`` where the paginator can, else as DRF's
    ``paginate_queryset`` (None without a paginator)."""
    paginator = view.paginator
    if paginator is None:
        return None
    if key is None or not hasattr(paginator, "paginate_listing"):
        return paginator.paginate_queryset(build(*values), view.request, view=view)
    return paginator.paginate_listing(build, view.request, view, key, values)
