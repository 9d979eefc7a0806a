"""/api/secrets: write-only values, names, conflicts, permissions, audit (SPEC §5, §8)."""

import pytest

from system_app.models import Secret
from tasks_app.models import Task
from tasks_app.notifications.models import Channel
from tests.api_crud import CreateObject, DeleteObject, GetObject, ListObjects, UpdateObject
from tests.api_helpers import assert_error, last_audit
from tests.factories import ChannelFactory, SecretFactory, TaskFactory

pytestmark = pytest.mark.django_db

VALUE = "p4ss-w0rd-for-the-api-Zz81"


class TestSecretAPI(ListObjects, GetObject, CreateObject, UpdateObject, DeleteObject):
    """Secrets are named in their URL; PUT replaces the value, and there is no PATCH."""

    path = "/api/secrets"
    model = Secret
    factory = SecretFactory
    lookup_field = "name"
    fields = frozenset({"name", "description", "created_by", "created_at", "updated_at"})
    unshown_fields = frozenset({"value"})  # write-only (SPEC §8)
    permissions = {
        "list": "task.read",
        "retrieve": "task.read",
        "create": "system.write",
        "update": "system.write",
        "destroy": "system.write",
    }
    missing_lookups = ("NOPE",)
    create_data = {"name": "DB_PASSWORD", "value": VALUE, "description": "the reporting database"}
    required_fields = ("name", "value")
    bad_create_data = ({"name": "lower"}, "name")
    unique_field = "name"
    update_data = {"value": "n3w-value-for-the-api-Qq72", "description": "new words"}
    put_required_fields = ("value",)

    def expected_update_audit(self, before, after):
        # That the value changed, never what it is.
        return {"value": "changed", **super().expected_update_audit(before, after)}

    def make_undeletable(self):
        secret = self.make()
        TaskFactory(name="uses-it", parameters={"env": {"PGPASSWORD": f"{{{{ secrets.{secret.name} }}}}"}})
        return secret, "uses-it"


def create(client, **overrides):
    body = {"name": "DB_PASSWORD", "value": VALUE, "description": "the reporting database"}
    body.update(overrides)
    return client.post("/api/secrets", body, format="json")


def test_it_creates_a_secret_and_never_returns_its_value(as_admin, admin_user):
    response = create(as_admin)
    assert response.status_code == 201, response.content
    assert set(response.json()) == {"name", "description", "created_by", "created_at", "updated_at"}
    assert response.json()["name"] == "DB_PASSWORD"
    assert response.json()["created_by"] == admin_user.username
    assert Secret.objects.get(name="DB_PASSWORD").reveal() == VALUE
    entry = last_audit("create", "secret")
    assert entry.changes == {"name": "DB_PASSWORD", "description": "the reporting database"}


def test_it_lists_and_shows_secrets_to_viewers_without_values(as_admin, as_viewer):
    create(as_admin)
    listed = as_viewer.get("/api/secrets")
    assert listed.status_code == 200
    assert [item["name"] for item in listed.json()["results"]] == ["DB_PASSWORD"]
    shown = as_viewer.get("/api/secrets/DB_PASSWORD")
    assert shown.status_code == 200 and "value" not in shown.json()
    assert VALUE not in listed.content.decode() + shown.content.decode()


def test_it_replaces_the_value_with_put_and_audits_without_it(as_admin):
    create(as_admin)
    response = as_admin.put("/api/secrets/DB_PASSWORD", {"value": "n3w-value-for-the-api-Qq72"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["description"] == "the reporting database"
    assert Secret.objects.get(name="DB_PASSWORD").reveal() == "n3w-value-for-the-api-Qq72"
    assert last_audit("update", "secret").changes == {"value": "changed"}
    described = as_admin.put(
        "/api/secrets/DB_PASSWORD", {"value": "n3w-value-for-the-api-Qq72", "description": "new"}, format="json"
    )
    assert described.status_code == 200
    assert last_audit("update", "secret").changes == {
        "value": "changed",
        "description": ["the reporting database", "new"],
    }


@pytest.mark.parametrize(
    "body",
    [
        {"value": None},
        {},
        {"value": ""},
        {"value": 123},
        {"value": "ok-value", "name": "OTHER_NAME"},
    ],
)
def test_it_refuses_a_bad_put(as_admin, body):
    create(as_admin)
    assert_error(as_admin.put("/api/secrets/DB_PASSWORD", body, format="json"), 400)
    assert Secret.objects.get(name="DB_PASSWORD").reveal() == VALUE


def test_it_refuses_a_put_whose_body_is_not_an_object(as_admin):
    create(as_admin)
    assert_error(as_admin.put("/api/secrets/DB_PASSWORD", ["x"], format="json"), 400)


@pytest.mark.parametrize(
    "name",
    ["", "lower", "1STARTS_WITH_DIGIT", "_UNDERSCORE", "HAS-DASH", "HAS SPACE", "A" * 65, "ÄRGER", 7, None, "X\x00"],
)
def test_it_refuses_bad_names(as_admin, name):
    assert_error(create(as_admin, name=name), 400, field="name")
    assert not Secret.objects.exists()


@pytest.mark.parametrize("value", ["", None, 12, ["x"], "nul\x00inside", "x" * (64 * 1024 + 1)])
def test_it_refuses_bad_values(as_admin, value):
    assert_error(create(as_admin, value=value), 400, field="value")


def test_it_accepts_the_longest_name(as_admin):
    assert create(as_admin, name="L" + "0" * 63).status_code == 201


def test_it_answers_409_for_a_duplicate_name(as_admin):
    create(as_admin)
    assert_error(create(as_admin, value="another-value-Yy55"), 409)
    assert Secret.objects.get(name="DB_PASSWORD").reveal() == VALUE


def test_it_answers_404_for_a_malformed_name(as_admin):
    assert_error(as_admin.get("/api/secrets/bad%20name"), 404)


def test_it_deletes_a_secret_only_mentioned_outside_references(as_admin):
    create(as_admin)
    TaskFactory(name="mentions", command="echo DB_PASSWORD", parameters={"env": {"X": "secrets.DB_PASSWORD"}})
    assert as_admin.delete("/api/secrets/DB_PASSWORD").status_code == 204


def test_it_documents_secrets_in_the_schema(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    assert {"/api/secrets", "/api/secrets/{name}"} <= set(schema["paths"])
    detail = schema["paths"]["/api/secrets/{name}"]
    assert set(detail) >= {"get", "put", "delete"} and "patch" not in detail
    assert {"400", "403", "404", "409"} <= set(detail["delete"]["responses"])
    secret_schema = schema["components"]["schemas"]["Secret"]
    assert "value" not in secret_schema["properties"]
    request_schema = schema["components"]["schemas"]["SecretRequest"]
    assert "value" in request_schema["properties"]


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("description", '{"name": "OK_NAME", "value": "fine-value-Tt10", "description": "a\\u0000b"}'),
        ("description", '{"name": "OK_NAME", "value": "fine-value-Tt10", "description": "\\ud800"}'),
        ("value", '{"name": "OK_NAME", "value": "\\udfff-lone"}'),
        ("name", '{"name": "\\ud800", "value": "fine-value-Tt10"}'),
        ("name", '{"name": "ONE\\u0661", "value": "fine-value-Tt10"}'),
        ("description", '{"name": "OK_NAME", "value": "fine-value-Tt10", "description": 5}'),
    ],
)
def test_it_refuses_input_that_cannot_be_stored(as_admin, field, body):
    response = as_admin.generic("POST", "/api/secrets", body, content_type="application/json")
    assert_error(response, 400, field=field)
    assert not Secret.objects.exists()


@pytest.mark.parametrize("path", ["/api/secrets/%00", "/api/secrets/A%00", "/api/secrets/%ED%A0%80", "/api/secrets/Ä"])
def test_it_answers_404_for_names_no_secret_can_have(as_admin, path):
    assert_error(as_admin.get(path), 404)
    assert_error(as_admin.put(path, {"value": "x-value-Ss20"}, format="json"), 404)
    assert_error(as_admin.delete(path), 404)


@pytest.mark.parametrize("body", ["[]", '"text"', "null", "{bad json"])
def test_it_refuses_a_body_that_is_not_a_json_object(as_admin, body):
    assert_error(as_admin.generic("POST", "/api/secrets", body, content_type="application/json"), 400)


def test_it_refuses_to_delete_a_secret_a_task_or_a_channel_refers_to(as_admin):
    SecretFactory(name="HOOK_TOKEN", value="hook-token-Zz42")
    ChannelFactory(name="ops", config={"url": "https://hooks.example.com/?t={{ secrets.HOOK_TOKEN }}"})
    TaskFactory(name="nightly", parameters={"env": {"T": "{{ secrets.HOOK_TOKEN }}"}})
    response = as_admin.delete("/api/secrets/HOOK_TOKEN")
    assert_error(response, 409)
    assert response.json()["error"]["message"] == (
        "Secret HOOK_TOKEN is in use by task 'nightly', channel 'ops'; change them first."
    )
    Task.objects.all().delete()
    assert_error(as_admin.delete("/api/secrets/HOOK_TOKEN"), 409)
    Channel.objects.all().delete()
    assert as_admin.delete("/api/secrets/HOOK_TOKEN").status_code == 204
