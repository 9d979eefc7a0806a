"""Secrets: references, resolution, masking, encryption at rest, the key
setting, and the suite-wide leak guard itself (SPEC §8)."""

import base64
import json
import logging
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from scheduler_site import env
from scheduler_site.env import ConfigError
from system_app import encryption, secrets
from system_app.models import Secret
from tests.factories import SecretFactory
from tests.secret_guard import SecretLeakGuard
from workers_app.actors import mask_output

ROOT = Path(__file__).resolve().parents[2]


def test_it_finds_references_with_whitespace_inside_the_braces():
    text = "a {{secrets.TOKEN}} b {{  secrets.DB_PASS_2 }} c {{ secrets.lower }} {{ secret.X }} {{ secrets.A }}"
    assert secrets.referenced_names(text) == {"TOKEN", "DB_PASS_2", "A"}
    assert secrets.REFERENCE.fullmatch("{{ secrets.TOKEN }}").group(1) == "TOKEN"


def test_it_finds_references_in_lists_and_objects():
    value = {"env": {"K": "{{ secrets.ONE }}"}, "body": [1, None, {"x": "pre-{{ secrets.TWO }}"}], "n": 3}
    assert secrets.referenced_names(value) == {"ONE", "TWO"}
    assert secrets.referenced_names(None) == set()


@pytest.mark.django_db
def test_it_resolves_references_in_one_query_without_touching_the_input(django_assert_num_queries):
    SecretFactory(name="ONE", value="first-value-aaaa")
    SecretFactory(name="TWO", value="second-value-bbbb")
    value = {"env": {"A": "{{ secrets.ONE }}", "B": "x{{secrets.TWO}}y{{ secrets.ONE }}"}, "keep": 1}
    with django_assert_num_queries(1):
        resolved, used = secrets.resolve(value)
    assert resolved == {"env": {"A": "first-value-aaaa", "B": "xsecond-value-bbbbyfirst-value-aaaa"}, "keep": 1}
    assert sorted(used) == ["first-value-aaaa", "second-value-bbbb"]
    assert value["env"]["A"] == "{{ secrets.ONE }}"
    assert secrets.resolve("no references") == ("no references", [])


@pytest.mark.django_db
def test_it_raises_for_a_missing_secret():
    with pytest.raises(secrets.MissingSecret) as raised:
        secrets.resolve(["{{ secrets.NOT_THERE }}"])
    assert raised.value.name == "NOT_THERE"
    assert str(raised.value) == "secret NOT_THERE does not exist"


@pytest.mark.django_db
def test_it_raises_for_a_secret_stored_under_another_key(settings):
    SecretFactory(name="OLD", value="old-value-cccc")
    settings.SECRETS_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(secrets.UnreadableSecret):
        secrets.resolve("{{ secrets.OLD }}")


def test_it_masks_every_occurrence_longest_first():
    text = "token=abc123xyz; again abc123xyz; prefix abc123"
    assert secrets.mask(text, ["abc123", "abc123xyz", ""]) == "token=***; again ***; prefix ***"
    assert secrets.mask("", ["x"]) == ""
    assert secrets.mask("nothing", []) == "nothing"
    assert secrets.mask("keep all", [""]) == "keep all"


MULTI_LINE = "line1-LEAKME\nline2-LEAKME"


@pytest.mark.parametrize(
    "written",
    [
        f"Invalid header value {MULTI_LINE.encode()!r}",  # bytes repr: line1-LEAKME\\nline2-LEAKME
        f"URL can't contain control characters. {MULTI_LINE!r}",
        f"body: {json.dumps({'token': MULTI_LINE})}",
        "url: https://example.com/?t=line1-LEAKME%0Aline2-LEAKME",
        "url: https://example.com/?t=line1-LEAKME%0Aline2-LEAKME&x=line1-LEAKME",
        "only the first line: line1-LEAKME",
    ],
)
def test_it_masks_a_value_as_errors_and_urls_write_it(written):
    masked = secrets.mask(written, [MULTI_LINE])
    assert "LEAKME" not in masked, masked
    assert "***" in masked


def test_it_masks_the_part_of_a_value_at_a_cut():
    value = "s3cr3t-VALUE-4242"
    assert secrets.mask("LUE-4242AAAA", [value], cut_start=True) == "***AAAA"
    assert secrets.mask("AAAA s3cr3", [value], cut_end=True) == "AAAA ***"
    # Without a cut, text that merely shares a character with a value stays.
    assert secrets.mask("2 AAAA s", [value]) == "2 AAAA s"
    assert secrets.mask("AAAA", [value], cut_start=True, cut_end=True) == "AAAA"


def test_a_worker_masks_the_start_of_an_output_tail_that_fills_its_limit():
    value = "s3cr3t-VALUE-4242"
    tail = "LUE-4242" + "A" * 56
    assert mask_output(tail, [value], output_limit=64) == "***" + "A" * 56
    assert mask_output(tail, [value], output_limit=1024) == tail  # not cut: nothing to mask


@pytest.mark.django_db
def test_it_stores_values_encrypted_at_rest():
    secret = SecretFactory(name="AT_REST", value="clear-text-value-dddd")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM system_app_secret WHERE id = %s", [secret.pk])
        row = cursor.fetchone()
    assert not any("clear-text-value-dddd" in str(column) for column in row)
    assert Secret.objects.get(pk=secret.pk).reveal() == "clear-text-value-dddd"


@pytest.mark.django_db
def test_it_derives_the_key_from_secret_key_unless_secrets_key_is_set(settings):
    secret = SecretFactory(name="DERIVED", value="derived-value-eeee")
    key = encryption.derived_key(settings.SECRET_KEY)
    assert Fernet(key).decrypt(secret.encrypted_value.encode()) == b"derived-value-eeee"
    settings.SECRETS_KEYS = [Fernet.generate_key().decode()]
    assert Secret.objects.get(pk=secret.pk).encrypted_value == secret.encrypted_value
    with pytest.raises(encryption.InvalidToken):
        secret.reveal()


@pytest.mark.django_db
def test_it_reads_values_under_an_older_key_and_rotates_them(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SECRETS_KEYS = [old]
    secret = SecretFactory(name="ROTATED", value="rotated-value-ffff")
    settings.SECRETS_KEYS = [new, old]
    assert secret.reveal() == "rotated-value-ffff"
    rotated = encryption.rotate(secret.encrypted_value)
    settings.SECRETS_KEYS = [new]
    assert encryption.decrypt(rotated) == "rotated-value-ffff"


def test_it_checks_the_secrets_key_setting():
    good = Fernet.generate_key().decode()
    assert env.env_fernet_keys("SECRETS_KEY", environ={}) == []
    assert env.env_fernet_keys("SECRETS_KEY", environ={"SECRETS_KEY": f"{good}, {good}"}) == [good, good]
    for bad in ("short", base64.urlsafe_b64encode(b"x" * 31).decode(), "!!!not base64!!!" * 3, "é" * 44):
        with pytest.raises(ConfigError, match="^SECRETS_KEY: each key must be a Fernet key"):
            env.env_fernet_keys("SECRETS_KEY", environ={"SECRETS_KEY": bad})


# The leak guard (tests/secret_guard.py) --------------------------------------


def test_the_guard_reports_values_in_responses_logs_and_database_writes():
    guard = SecretLeakGuard()
    guard.learn("hunter2-guard-value")
    guard.learn("")
    guard.check("response", b'{"ok": true}')
    guard.check_statement("SELECT 1 WHERE x = %s", ["hunter2-guard-value"])  # reads are not stored
    assert guard.leaks == []
    guard.check("response", b'{"token": "hunter2-guard-value"}')
    guard.check_statement('UPDATE "t" SET "stdout" = %s', ["out: hunter2-guard-value"])
    guard.check_statement('INSERT INTO "a" VALUES (%s)', [[("nested", {"k": "hunter2-guard-value"})]])
    assert len(guard.leaks) == 3


def test_the_guard_reports_values_in_log_records_and_json_escaped_forms():
    guard = SecretLeakGuard()
    guard.learn('quote"value-gggg')
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", ('{"v": "quote\\"value-gggg"}',), None)
    guard.emit(record)
    assert guard.leaks and "log record x:INFO" in guard.leaks[0]


@pytest.mark.django_db
def test_the_suite_guard_learns_each_secret_a_test_stores(secret_guard):
    SecretFactory(name="LEARNED", value="learned-value-hhhh")
    assert "learned-value-hhhh" in secret_guard.values


@pytest.mark.django_db
def test_rotatesecrets_reencrypts_every_secret_under_the_newest_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SECRETS_KEYS = [old]
    SecretFactory(name="FIRST", value="first-rotating-value-11")
    SecretFactory(name="SECOND", value="second-rotating-value-22")
    settings.SECRETS_KEYS = [new, old]
    out = StringIO()
    call_command("rotatesecrets", stdout=out)
    assert out.getvalue().strip() == "2 secret(s) re-encrypted under the first key of SECRETS_KEY"
    settings.SECRETS_KEYS = [new]
    assert sorted(secret.reveal() for secret in Secret.objects.all()) == [
        "first-rotating-value-11",
        "second-rotating-value-22",
    ]


@pytest.mark.django_db
def test_rotatesecrets_names_a_secret_no_key_opens(settings):
    settings.SECRETS_KEYS = [Fernet.generate_key().decode()]
    secret = SecretFactory(name="LOST", value="lost-rotating-value-33")
    settings.SECRETS_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="no configured key opens: LOST"):
        call_command("rotatesecrets", stdout=StringIO())
    assert Secret.objects.get(pk=secret.pk).encrypted_value == secret.encrypted_value


def test_a_bad_secrets_key_stops_the_process_with_one_line():
    environ = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "BROKER_URL")}
    environ["SECRETS_KEY"] = "not-a-fernet-key"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Configuration error: SECRETS_KEY: each key must be a Fernet key")
    assert len(result.stderr.strip().splitlines()) == 1
