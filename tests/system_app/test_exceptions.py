"""One conflict exception: raised anywhere, answered 409 CONFLICT by the API."""

from django.db import IntegrityError

from system_app.exceptions import Conflict, api_exception_handler


def answer(exc):
    response = api_exception_handler(exc, {})
    return response.status_code, response.data["error"]


def test_it_answers_a_conflict_with_409_and_its_message():
    status, error = answer(Conflict("A task named 'x' already exists."))
    assert status == 409
    assert error == {"code": "CONFLICT", "message": "A task named 'x' already exists.", "details": []}


def test_it_gives_a_conflict_without_message_the_default_one():
    status, error = answer(Conflict())
    assert (status, error["message"]) == (409, "The request conflicts with the current state.")


def test_it_answers_a_lost_unique_race_as_a_conflict():
    status, error = answer(IntegrityError("UNIQUE constraint failed"))
    assert (status, error["code"]) == (409, "CONFLICT")
    assert "already taken" in error["message"]
