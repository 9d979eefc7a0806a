"""Dramatiq messages are encoded with orjson, in the same JSON as Dramatiq's default."""

import dramatiq
import pytest
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError

from system_app.message_encoding import OrjsonEncoder
from tasks_app.dispatcher.enqueueing import build_message


def test_it_is_the_encoder_in_use():
    assert isinstance(dramatiq.get_encoder(), OrjsonEncoder)


def test_it_writes_and_reads_the_same_json_as_dramatiqs_default():
    message = build_message(123456, "default", 7)
    ours = message.encode()
    assert ours == JSONEncoder().encode(message.asdict())
    theirs = JSONEncoder().encode(message.asdict())
    assert OrjsonEncoder().decode(theirs) == JSONEncoder().decode(theirs)
    assert dramatiq.Message.decode(ours) == message


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"not json"])
def test_a_body_that_is_not_json_is_a_decode_error(body):
    # Dramatiq's consumers reject such a message instead of crashing.
    with pytest.raises(DecodeError):
        OrjsonEncoder().decode(body)
