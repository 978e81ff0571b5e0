"""What the broker raises becomes a problem with the broker's words: a refusal is a 409
(BrokerRefused), an outage or a transient condition a 503 (BrokerUnavailable) — never a 500.
Exceptions built as py-amqp and redis-py raise them."""

from __future__ import annotations

import amqp.exceptions
import kombu.exceptions
import pytest
import redis.exceptions

from actions.errors import NACK_REASON, BrokerRefused, BrokerUnavailable, broker_errors

INEQUIVALENT = ("PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'prio' in "
                "vhost 'v': received none but current is the value '10' of type 'signedint'")


def raised(exc: BaseException) -> BrokerRefused | BrokerUnavailable:
    with pytest.raises((BrokerRefused, BrokerUnavailable)) as info, broker_errors():
        raise exc
    return info.value


def test_an_amqp_channel_error_is_a_409_with_the_brokers_reason():
    error = raised(amqp.exceptions.PreconditionFailed(INEQUIVALENT, (50, 10), reply_code=406))
    assert isinstance(error, BrokerRefused) and error.status == 409
    assert error.detail == f"the broker refused it: 406 {INEQUIVALENT}"
    assert dict(error.extra) == {"reason": "broker-refused",
                                 "broker_reason": f"406 {INEQUIVALENT}"}


@pytest.mark.parametrize("exc", [
    amqp.exceptions.ConnectionForced("CONNECTION_FORCED - broker forced connection closure "
                                     "with reason 'shutdown'", reply_code=320),
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    redis.exceptions.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
    ConnectionRefusedError(111, "Connection refused"),
])
def test_outages_and_transient_refusals_are_503(exc):
    error = raised(exc)
    assert isinstance(error, BrokerUnavailable) and error.status == 503


def test_a_redis_error_reply_about_the_request_is_a_409():
    error = raised(redis.exceptions.ResponseError(
        "WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert (type(error), error.detail) == (
        BrokerRefused, "the broker refused it: WRONGTYPE Operation against a key holding the "
                       "wrong kind of value")


def wrapped(exc: BaseException) -> kombu.exceptions.OperationalError:
    """``exc`` as kombu's publish retry policy re-raises it: an OperationalError from it."""
    try:
        try:
            raise exc
        except Exception as inner:
            raise kombu.exceptions.OperationalError(str(inner)) from inner
    except kombu.exceptions.OperationalError as outer:
        return outer


def test_a_nacked_publish_wrapped_by_kombu_is_a_503_saying_nothing_was_enqueued():
    error = raised(wrapped(amqp.exceptions.MessageNacked()))
    assert isinstance(error, BrokerUnavailable) and error.status == 503
    assert error.detail == f"the broker took nothing: {NACK_REASON}"
    assert dict(error.extra)["broker_reason"] == NACK_REASON


def test_a_redis_reply_wrapped_by_kombu_keeps_the_brokers_words():
    error = raised(wrapped(redis.exceptions.OutOfMemoryError(
        "command not allowed when used memory > 'maxmemory'.")))
    assert (type(error), error.detail) == (
        BrokerUnavailable,
        "the broker took nothing: command not allowed when used memory > 'maxmemory'.")


def test_an_operational_error_of_its_own_is_an_outage():
    error = raised(kombu.exceptions.OperationalError("[Errno 111] Connection refused"))
    assert isinstance(error, BrokerUnavailable)
    assert error.detail == ("the broker did not answer (OperationalError: [Errno 111] "
                            "Connection refused)")
