"""Habits kept honest: every command has a test, every model an admin and a migration."""

from pathlib import Path

import pytest
from django.apps import apps
from django.contrib import admin
from django.core.management import call_command, get_commands

ROOT = Path(__file__).resolve().parents[1]
OUR_APPS = ("tasks_app", "workers_app", "system_app")


def test_it_has_a_test_for_every_management_command():
    ours = sorted(name for name, app in get_commands().items() if app in OUR_APPS)
    assert ours, "no management commands found"
    tests_text = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    untested = [name for name in ours if f'"{name}"' not in tests_text]
    assert not untested, f"commands without a test: {untested}"


def test_it_registers_every_model_in_the_admin():
    missing = [
        model.__name__
        for label in OUR_APPS
        for model in apps.get_app_config(label).get_models()
        if not model._meta.auto_created
        and model.__name__ != "TaskDependency"
        # Versions (django-simple-history) are shown on their object's history page.
        and not hasattr(model, "instance_type")
        and model not in admin.site._registry
    ]
    assert not missing, f"models without an admin: {missing}"


@pytest.mark.django_db
def test_it_has_a_migration_for_every_model_change():
    call_command("makemigrations", *OUR_APPS, "--check", "--dry-run", verbosity=0)
