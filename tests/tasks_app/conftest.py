"""Fixtures of the tasks app's tests."""

import dramatiq
import pytest


@pytest.fixture
def broker():
    """The in-memory broker, emptied before and after the test."""
    broker = dramatiq.get_broker()
    broker.flush_all()
    yield broker
    broker.flush_all()
