"""What the broker raises becomes a problem with the broker's words: a refusal is a 409
(BrokerRefused), an outage or a transient condition a 503 (BrokerUnavailable) — never a 500.
Exceptions built as py-amqp and redis-py raise them."""

from __future__ import annotations

import amqp.exceptions
import pytest
import redis.exceptions

from actions.errors import BrokerRefused, BrokerUnavailable, broker_errors

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
