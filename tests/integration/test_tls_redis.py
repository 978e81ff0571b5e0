"""``rediss://`` with Celery's documented TLS options, against a real redis-server that speaks
only TLS with a certificate from a private CA (tests/support/tls_redis.py).

Before: the Redis fast path handed the URL to redis-py, which refuses kombu's spellings
(``ssl_cert_reqs=CERT_REQUIRED``: "Invalid SSL Certificate Requirements Flag") — a traceback a
second, no task metrics, ``/readyz`` 503 — while ``check`` (reading through kombu) said ok.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from exporter.events.redis_stream import RedisEventStream, redis_params
from tests.support.exporter import Exporter, log_lines, run_cli
from tests.support.tls_redis import Authority, TlsRedis, make_ca
from tests.support.waiting import assert_stays, wait_for

pytestmark = pytest.mark.integration
PATTERN = "/0.celeryev/*"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return make_ca(tmp_path, "jobmon-test-ca")


@pytest.fixture
def tls_redis(ca: Authority, tmp_path: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(ca, tmp_path)
    server.start()
    yield server
    server.remove()


def test_redis_params_take_every_spelling_kombu_takes():
    base = "rediss://:pw@10.0.0.5:6380/3?ssl_ca_certs=/ca.pem&ssl_cert_reqs="
    expected = {"host": "10.0.0.5", "port": 6380, "username": None, "password": "pw", "db": 3,
                "ssl": True, "ssl_ca_certs": "/ca.pem"}
    for spelling, mode in [("CERT_REQUIRED", ssl.CERT_REQUIRED), ("required", ssl.CERT_REQUIRED),
                           ("CERT_OPTIONAL", ssl.CERT_OPTIONAL), ("optional", ssl.CERT_OPTIONAL),
                           ("CERT_NONE", ssl.CERT_NONE), ("none", ssl.CERT_NONE)]:
        assert redis_params(Connection(base + spelling)) == {**expected, "ssl_cert_reqs": mode}
    # kombu's default without options (it warns): TLS without verification.
    assert redis_params(Connection("rediss://h")) == {
        "host": "h", "port": 6379, "username": None, "password": None, "db": 0, "ssl": True,
        "ssl_cert_reqs": ssl.CERT_NONE}
    assert redis_params(Connection("redis://u:p@h:1/2")) == {
        "host": "h", "port": 1, "username": "u", "password": "p", "db": 2}


@pytest.mark.parametrize("query", [
    "ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs={ca}", "ssl_cert_reqs=required&ssl_ca_certs={ca}",
    "ssl_cert_reqs=CERT_NONE", "ssl_cert_reqs=none", "",
])
def test_the_fast_path_subscribes_over_tls_with_each_form(tls_redis, ca, query):
    url = f"{tls_redis.url()}?{query.format(ca=ca.pem)}"
    stream = RedisEventStream(redis_params(Connection(url)), PATTERN)
    stream.connect()  # failed before for CERT_REQUIRED, CERT_NONE (redis-py's flag check)
    try:
        tls_redis.client().publish("/0.celeryev/task.x", b"payload")
        assert wait_for(lambda: stream.read_batch(timeout=0.5), 5) == [b"payload"]
    finally:
        stream.close()


def test_serve_counts_tasks_on_rediss_with_a_private_ca(tls_redis, ca, producer,
                                                         start_exporter, start_worker):
    url = f"{tls_redis.url()}?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs={ca.pem}"
    exporter = start_exporter(url)  # /readyz 200: failed before (503, broker disconnected)
    start_worker(url, "a")
    app = producer(url)
    for i in range(3):
        app.send_task("examples.tasks.add", (i, 1), queue="a")
    wait_for(lambda: exporter.metrics().value(
        "celery_task_succeeded_total", name="examples.tasks.add", queue_name="a") == 3, 60,
        message=lambda: f"3 tasks counted\n{exporter.output()[-3000:]}")
    assert "Traceback" not in exporter.output()


def test_an_untrusted_certificate_is_one_line_naming_the_problem(tls_redis, tmp_path):
    other = make_ca(tmp_path, "some-other-ca")
    url = f"{tls_redis.url()}?ssl_cert_reqs=required&ssl_ca_certs={other.pem}"
    exporter = Exporter(url, "--reconnect-max-interval", "1s")
    try:
        def tls_problem() -> str | None:
            body = exporter.get("/readyz").json()
            return next((p["detail"] for p in body.get("problems", ())
                         if p["condition"] == "broker_tls"), None)

        detail = wait_for(tls_problem, 30, message=lambda: f"/readyz\n{exporter.output()}")
        assert detail.startswith("certificate verify failed: self-signed certificate in "
                                 "certificate chain; trust the broker's CA")
        assert exporter.get("/readyz").status_code == 503
        # Meanwhile the consumer tries again every second (--reconnect-max-interval 1s) and
        # the poller every round: still one line.
        assert_stays(lambda: len(log_lines(exporter.output(), "level=(WARNING|ERROR)")) == 1,
                     5, message=lambda: exporter.output())
    finally:
        exporter.stop()
    output = exporter.output()
    lines = log_lines(output, r"level=(WARNING|ERROR)")
    assert lines == log_lines(output, "broker TLS connection failed: certificate verify "
                                      "failed: self-signed certificate in certificate chain")
    assert len(lines) == 1, output
    assert "Traceback" not in output


def test_check_reads_events_over_tls_and_names_an_untrusted_certificate(tls_redis, ca, tmp_path,
                                                                        start_worker):
    good = f"{tls_redis.url()}?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs={ca.pem}"
    worker = start_worker(good, "a")
    wait_for(lambda: run_cli("check", "--broker-url", good, "--listen-seconds", "2").returncode
             == 0, 60, message=lambda: f"check exit 0\n{worker.output()[-2000:]}")
    bad = f"{tls_redis.url()}?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=" \
          f"{make_ca(tmp_path, 'other').pem}"
    result = run_cli("check", "--broker-url", bad, "--listen-seconds", "1")
    assert result.returncode == 1
    assert (f"[FAIL] broker: cannot connect to {tls_redis.url()}: TLS: certificate verify "
            "failed: self-signed certificate in certificate chain\n"
            "       fix: trust the broker's CA as the workers do: ssl_ca_certs=") in result.stdout
