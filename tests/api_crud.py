"""CRUD test mixins for the API's resources (SPEC §5), in the manner of netbox's
``APIViewTestCases``.

A resource's test class composes the mixins for the actions it has and
declares only what differs: its path, model and factory, the fields every
representation carries, the permission of each action (the SPEC §5 table),
and the bodies it creates and updates with. The mixins then check, for every
resource alike: the page envelope and its limits, lists costing a constant
number of queries, retrieve and its 404, create (201 with the body, 400 with
the error envelope, 409 on a clash), PUT and PATCH, delete (204, 409 where
refused), the audit entry of every write, 405 on the methods a resource does
not have, and who may do each action: every role, an authenticated caller
with no role, no credentials at all, and API keys with and without the
permission.

Class names do not start with ``Test``, so pytest collects these methods only
through the resource classes that compose them::

    class TestChannelAPI(ListObjects, GetObject, CreateObject, UpdateObject, DeleteObject):
        path = "/api/channels"
        model = Channel
        factory = ChannelFactory
        ...
"""

import importlib
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from system_app import audit
from system_app.models import PERMISSIONS, ROLES
from system_app.principals import PRINCIPALS
from tests.api_helpers import assert_error, audit_entries, last_audit

# Every kind of caller: no credentials, authenticated with no role, the three
# roles of SPEC §5, and API keys (of the admin) with and without the permission.
CALLERS = ("anonymous", "outsider", "viewer", "operator", "admin", "key with it", "key without it")
PAGE_ENVELOPE = {"count", "count_is_estimate", "next", "previous", "results"}
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100
# A generous ceiling: auth (user, permissions), a count, the page, prefetches.
MAX_QUERIES = 10
# What an update may change besides the fields it sends; never audited.
BOOKKEEPING = ("updated_at", "next_run_at")


def client_as(request, caller, permission):
    """An API client for ``caller`` (one of CALLERS) about ``permission``."""
    if caller == "anonymous":
        return APIClient()
    if caller in ("outsider", *ROLES):
        return request.getfixturevalue(f"as_{caller}")
    key_client = request.getfixturevalue("key_client")
    if caller == "key with it":
        return key_client(permission)
    # Every other permission: none of them stands in for this one.
    return key_client(*[other for other in PERMISSIONS if other != permission])


def is_plain(value):
    return value is None or isinstance(value, str | int | float | bool | list | dict)


class APIResource:
    """What every resource's test class declares."""

    pytestmark = [pytest.mark.django_db]

    path = None  # "/api/tasks"
    model = None
    factory = None
    # The response field, and model attribute, that names a row in its URL.
    lookup_field = "id"
    # Fields every representation carries (SPEC §4), and those only the detail does.
    fields = frozenset()
    detail_only_fields = frozenset()
    # Fields whose shown value is not the stored one on purpose (masked credentials).
    unshown_fields = frozenset()
    # Action (list, retrieve, create, update, partial_update, destroy) → permission.
    permissions = {}
    # Actions an API key may not do, whatever its scope (SPEC §5).
    users_only = frozenset()
    # Lookups no row has: each answers 404.
    missing_lookups = ("424242",)

    def make(self, **kwargs):
        return self.factory(**kwargs)

    def make_many(self, n):
        for _ in range(n):
            self.make()

    @property
    def audit_type(self):
        return self.model._meta.model_name

    def lookup_of(self, obj):
        return getattr(obj, self.lookup_field)

    def detail(self, lookup):
        return f"{self.path}/{lookup}"

    def detail_of(self, obj):
        return self.detail(self.lookup_of(obj))

    def row(self, lookup):
        return self.model.objects.filter(**{self.lookup_field: lookup}).first()

    def assert_shows(self, data, obj):
        """``data`` represents ``obj``: its fields, and every plain stored
        value among them (a foreign key shown as an id, as its id)."""
        assert set(data) >= self.fields, set(self.fields) - set(data)
        assert data[self.lookup_field] == self.lookup_of(obj)
        for field in (set(data) & (self.fields | self.detail_only_fields)) - self.unshown_fields:
            stored = getattr(obj, field, None)
            if isinstance(data[field], int) and hasattr(obj, f"{field}_id"):
                stored = getattr(obj, f"{field}_id")
            if is_plain(stored):
                assert data[field] == stored, (field, data[field], stored)

    def stored(self, obj):
        """The row as the database holds it, to tell that a refused write changed nothing."""
        return self.model.objects.filter(pk=obj.pk).values().first()

    def shown(self, client, obj):
        response = client.get(self.detail_of(obj))
        assert response.status_code == 200, response.content[:300]
        return response.json()

    # Who may do what --------------------------------------------------------

    def allowed(self, caller, action):
        permission = self.permissions[action]
        if caller in ("anonymous", "outsider"):
            return False
        if caller.startswith("key"):
            return caller == "key with it" and action not in self.users_only
        return permission in ROLES[caller]

    def as_caller(self, request, caller, action):
        return client_as(request, caller, self.permissions[action])

    def assert_refused(self, response, caller, action):
        """The permission layer refused ``caller``: 401 without credentials,
        403 naming the missing permission otherwise."""
        if caller == "anonymous":
            assert_error(response, 401)
            assert response["WWW-Authenticate"].startswith("Bearer")
            return
        error = assert_error(response, 403)
        if caller != "outsider" and action not in self.users_only:
            assert self.permissions[action] in error["message"], error

    @classmethod
    def operations(cls):
        """(method, path template) of every operation the mixins cover."""
        detail = f"{cls.path}/{{id}}"
        covered = {
            ListObjects: [("get", cls.path)],
            GetObject: [("get", detail)],
            CreateObject: [("post", cls.path)],
            UpdateObject: [("put", detail)]
            + ([("patch", detail)] if getattr(cls, "patch_data", None) is not None else []),
            DeleteObject: [("delete", detail)],
        }
        return {operation for mixin, ops in covered.items() if issubclass(cls, mixin) for operation in ops}


class ListObjects(APIResource):
    """GET {path}: the page envelope of SPEC §5, in a constant number of queries."""

    def test_it_lists_in_the_page_envelope(self, as_admin):
        while self.model.objects.count() <= DEFAULT_PAGE_SIZE:  # two pages, the second one short
            self.make()
        total = self.model.objects.count()
        response = as_admin.get(self.path)
        assert response.status_code == 200, response.content[:300]
        data = response.json()
        assert set(data) == PAGE_ENVELOPE
        assert (data["count"], data["count_is_estimate"]) == (total, False)
        assert len(data["results"]) == DEFAULT_PAGE_SIZE
        assert data["previous"] is None and data["next"].endswith(f"{self.path}?page=2")
        for item in data["results"]:
            assert set(item) >= self.fields
            assert not set(item) & self.detail_only_fields
        listed = {item[self.lookup_field]: item for item in data["results"]}
        for obj in self.model.objects.filter(**{f"{self.lookup_field}__in": list(listed)}):
            self.assert_shows(listed[self.lookup_of(obj)], obj)

        second = as_admin.get(self.path, {"page": 2}).json()
        assert len(second["results"]) == total - DEFAULT_PAGE_SIZE
        assert second["next"] is None and second["previous"] is not None
        everything = as_admin.get(self.path, {"page_size": MAX_PAGE_SIZE}).json()["results"]
        everything = [item[self.lookup_field] for item in everything]
        assert len(everything) == total
        middle = as_admin.get(self.path, {"page_size": 7, "page": 2}).json()["results"]
        assert [item[self.lookup_field] for item in middle] == everything[7:14]
        assert_error(as_admin.get(self.path, {"page_size": MAX_PAGE_SIZE + 1}), 400, field="page_size")

    def test_it_lists_in_constant_queries(self, as_admin):
        def count_queries():
            PRINCIPALS.clear()  # each call authenticates from the database, as the first one did
            with CaptureQueriesContext(connection) as context:
                response = as_admin.get(self.path, {"page_size": MAX_PAGE_SIZE})
            assert response.status_code == 200, response.content[:300]
            return len(context.captured_queries), len(response.json()["results"])

        self.make_many(3)
        few, few_rows = count_queries()
        self.make_many(30)
        many, many_rows = count_queries()
        assert many_rows >= few_rows + 30
        assert many == few, f"{few} queries for {few_rows} rows, {many} for {many_rows}"
        assert few <= MAX_QUERIES

    @pytest.mark.parametrize("caller", CALLERS)
    def test_it_lets_only_callers_with_the_permission_list(self, request, caller):
        self.make()
        response = self.as_caller(request, caller, "list").get(self.path)
        if self.allowed(caller, "list"):
            assert response.status_code == 200, response.content[:300]
            assert response.json()["count"] == self.model.objects.count()
        else:
            self.assert_refused(response, caller, "list")


class GetObject(APIResource):
    """GET {path}/{id}: one row, or a 404 in the error envelope."""

    def test_it_shows_one_row_in_few_queries(self, as_admin, django_assert_max_num_queries):
        obj = self.make()
        with django_assert_max_num_queries(MAX_QUERIES):
            response = as_admin.get(self.detail_of(obj))
        assert response.status_code == 200, response.content[:300]
        data = response.json()
        assert set(data) >= self.detail_only_fields
        self.assert_shows(data, obj)

    def test_it_answers_404_for_a_missing_row(self, as_admin):
        self.make()
        for lookup in self.missing_lookups:
            assert_error(as_admin.get(self.detail(lookup)), 404)

    @pytest.mark.parametrize("caller", CALLERS)
    def test_it_lets_only_callers_with_the_permission_retrieve(self, request, caller):
        obj = self.make()
        response = self.as_caller(request, caller, "retrieve").get(self.detail_of(obj))
        if self.allowed(caller, "retrieve"):
            assert response.status_code == 200, response.content[:300]
            assert response.json()[self.lookup_field] == self.lookup_of(obj)
        else:
            self.assert_refused(response, caller, "retrieve")


class CreateObject(APIResource):
    """POST {path}: 201 with the body, 400 in the error envelope, audited."""

    create_data = {}
    # Fields an empty body's 400 names.
    required_fields = ()
    # (body, field): a body the API refuses, and the field its 400 names.
    bad_create_data = None
    # A field whose value is unique: a clash is a 409 (SPEC §4, §5).
    unique_field = None

    def create_body(self):
        return dict(self.create_data)

    def assert_created(self, response, body):
        assert response.status_code == 201, response.content[:500]
        data = response.json()
        for key, value in body.items():
            if key not in self.unshown_fields:
                assert data[key] == value, (key, data[key], value)
        obj = self.row(data[self.lookup_field])
        assert obj is not None
        self.assert_shows(data, obj)
        return data

    def test_it_creates_and_audits(self, as_admin):
        body = self.create_body()
        data = self.assert_created(as_admin.post(self.path, body, format="json"), body)
        entry = last_audit("create", self.audit_type, self.row(data[self.lookup_field]).pk)
        assert (entry.actor, entry.user.username, entry.ip_address) == ("alice", "alice", "127.0.0.1")

    def test_it_refuses_bad_input_with_the_error_envelope(self, as_admin):
        before = self.model.objects.count()
        error = assert_error(as_admin.post(self.path, {}, format="json"), 400)
        assert {detail["field"] for detail in error["details"]} >= set(self.required_fields)
        if self.bad_create_data is not None:
            overrides, field = self.bad_create_data
            bad = {**self.create_body(), **overrides}
            assert_error(as_admin.post(self.path, bad, format="json"), 400, field=field)
        assert self.model.objects.count() == before
        assert not audit_entries("create", self.audit_type)

    def test_it_answers_409_on_a_clash(self, as_admin):
        if self.unique_field is None:
            return
        body = self.create_body()
        self.make(**{self.unique_field: body[self.unique_field]})
        before = self.model.objects.count()
        assert_error(as_admin.post(self.path, body, format="json"), 409)
        assert self.model.objects.count() == before

    @pytest.mark.parametrize("caller", CALLERS)
    def test_it_lets_only_callers_with_the_permission_create(self, request, caller):
        body = self.create_body()
        client = self.as_caller(request, caller, "create")  # an API key is a row too
        before = self.model.objects.count()
        response = client.post(self.path, body, format="json")
        if self.allowed(caller, "create"):
            self.assert_created(response, body)
        else:
            self.assert_refused(response, caller, "create")
            assert self.model.objects.count() == before


class UpdateObject(APIResource):
    """PUT and PATCH {path}/{id}: 200 with the change, audited as old/new pairs.
    A resource without PATCH (``patch_data = None``) answers it with 405."""

    update_data = {}
    patch_data = None
    # Fields a PUT with an empty body names; the create's required fields unless set.
    put_required_fields = None

    def update_body(self, obj):
        return dict(self.update_data)

    def expected_update_audit(self, before, after):
        """What the audit entry of an update records: the shown fields that changed."""
        return {key: pair for key, pair in audit.diff(before, after).items() if key not in BOOKKEEPING}

    def assert_updated(self, response, obj, body):
        assert response.status_code == 200, response.content[:500]
        data = response.json()
        for key, value in body.items():
            if key not in self.unshown_fields:
                assert data[key] == value, (key, data[key], value)
        obj.refresh_from_db()
        self.assert_shows(data, obj)
        return data

    def test_it_replaces_a_row_with_put(self, as_admin):
        obj = self.make()
        before = self.shown(as_admin, obj)
        body = self.update_body(obj)
        after = self.assert_updated(as_admin.put(self.detail_of(obj), body, format="json"), obj, body)
        entry = last_audit("update", self.audit_type, obj.pk)
        assert entry.actor == "alice"
        assert entry.changes and entry.changes == self.expected_update_audit(before, after)
        assert not set(entry.changes) & set(BOOKKEEPING)

    def test_it_patches_only_what_is_given(self, as_admin):
        obj = self.make()
        if self.patch_data is None:
            assert_error(as_admin.patch(self.detail_of(obj), {}, format="json"), 405)
            return
        before = self.shown(as_admin, obj)
        response = as_admin.patch(self.detail_of(obj), self.patch_data, format="json")
        after = self.assert_updated(response, obj, self.patch_data)
        for key, value in before.items():
            if key not in self.patch_data and key not in BOOKKEEPING:
                assert after[key] == value, key
        entry = last_audit("update", self.audit_type, obj.pk)
        assert entry.changes == self.expected_update_audit(before, after)
        assert set(entry.changes) <= set(self.patch_data)

    def test_it_refuses_an_incomplete_put_with_the_error_envelope(self, as_admin):
        obj = self.make()
        before = self.stored(obj)
        error = assert_error(as_admin.put(self.detail_of(obj), {}, format="json"), 400)
        required = self.required_fields if self.put_required_fields is None else self.put_required_fields
        assert {detail["field"] for detail in error["details"]} >= set(required)
        assert self.stored(obj) == before
        assert not audit_entries("update", self.audit_type)

    def test_it_answers_404_for_updating_a_missing_row(self, as_admin):
        obj = self.make()
        for lookup in self.missing_lookups:
            assert_error(as_admin.put(self.detail(lookup), self.update_body(obj), format="json"), 404)

    @pytest.mark.parametrize("method", ["put", "patch"])
    @pytest.mark.parametrize("caller", CALLERS)
    def test_it_lets_only_callers_with_the_permission_update(self, request, caller, method):
        if method == "patch" and self.patch_data is None:
            return
        obj = self.make()
        before = self.stored(obj)
        action, body = ("update", self.update_body(obj)) if method == "put" else ("partial_update", self.patch_data)
        response = getattr(self.as_caller(request, caller, action), method)(self.detail_of(obj), body, format="json")
        if self.allowed(caller, action):
            self.assert_updated(response, obj, body)
        else:
            self.assert_refused(response, caller, action)
            assert self.stored(obj) == before


class DeleteObject(APIResource):
    """DELETE {path}/{id}: 204 with no body, audited; a second one is a 404."""

    delete_action = "delete"  # the audited action
    delete_again_status = 404

    def is_gone(self, obj):
        return not self.model.objects.filter(pk=obj.pk).exists()

    def make_undeletable(self):
        """A row that DELETE refuses with 409, and a text its message holds; None: no such row."""
        return None

    def test_it_deletes_and_audits(self, as_admin):
        obj = self.make()
        lookup, pk, name = self.lookup_of(obj), obj.pk, str(obj)
        response = as_admin.delete(self.detail_of(obj))
        assert response.status_code == 204, response.content[:300]
        assert response.content == b""
        assert self.is_gone(obj)
        if isinstance(self, GetObject):
            assert_error(as_admin.get(self.detail(lookup)), 404)
        entry = last_audit(self.delete_action, self.audit_type, pk)
        assert (entry.actor, entry.object_repr, entry.changes) == ("alice", name, {})

        again = as_admin.delete(self.detail(lookup))
        if self.delete_again_status == 404:
            assert_error(again, 404)
        else:
            assert again.status_code == self.delete_again_status
        assert len(audit_entries(self.delete_action, self.audit_type, pk)) == 1

    def test_it_answers_404_for_deleting_a_missing_row(self, as_admin):
        self.make()
        for lookup in self.missing_lookups:
            assert_error(as_admin.delete(self.detail(lookup)), 404)

    def test_it_answers_409_where_a_row_cannot_be_deleted(self, as_admin):
        undeletable = self.make_undeletable()
        if undeletable is None:
            return
        obj, text = undeletable
        error = assert_error(as_admin.delete(self.detail_of(obj)), 409)
        assert text in error["message"], error
        assert not self.is_gone(obj)
        assert not audit_entries(self.delete_action, self.audit_type)

    @pytest.mark.parametrize("caller", CALLERS)
    def test_it_lets_only_callers_with_the_permission_delete(self, request, caller):
        obj = self.make()
        response = self.as_caller(request, caller, "destroy").delete(self.detail_of(obj))
        if self.allowed(caller, "destroy"):
            assert response.status_code == 204, response.content[:300]
            assert self.is_gone(obj)
        else:
            self.assert_refused(response, caller, "destroy")
            assert not self.is_gone(obj)


class ReadOnlyObjects(APIResource):
    """A listing written only by the scheduler itself: every write method is a 405."""

    def test_it_refuses_every_write_with_405(self, as_admin):
        obj = self.make()
        before = self.stored(obj)
        assert_error(as_admin.post(self.path, {}, format="json"), 405)
        for method in ("post", "put", "patch", "delete"):
            assert_error(getattr(as_admin, method)(self.detail_of(obj), {}, format="json"), 405)
        assert self.stored(obj) == before


def declared_resources():
    """Every resource test class of the API test modules (``tests/**/test_api_*.py``)."""
    root = Path(__file__).resolve().parent.parent
    found = []
    for path in sorted(Path(__file__).resolve().parent.rglob("test_api_*.py")):
        module = importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts))
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, APIResource) and value.path is not None
        ]
    return found
