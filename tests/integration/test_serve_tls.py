"""HTTPS with --tls-cert/--tls-key, and the action API on its own address (--api-listen)."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.support.exporter import Exporter
from tests.support.network import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return str(cert), str(key)


def test_tls_and_a_separate_api_address(redis_url, certificate):
    cert, key = certificate
    api_port = free_port()
    exporter = Exporter(redis_url, "--tls-cert", cert, "--tls-key", key,
                        "--api-listen", f"127.0.0.1:{api_port}", "--api-token", TOKEN)
    main = f"https://127.0.0.1:{exporter.port}"
    api = f"https://127.0.0.1:{api_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(verify=cert, timeout=5) as client:
            wait_for(lambda: client.get(f"{main}/readyz").status_code == 200, 30,
                     message=lambda: f"exporter ready over TLS\n{exporter.output()}")
            assert "celery_jobmon_broker_connected 1.0" in client.get(f"{main}/metrics").text
            assert client.get(f"{main}/api/v1/workers", headers=auth).status_code == 404
            wait_for(lambda: client.get(f"{api}/api/v1/workers", headers=auth).status_code
                     == 200, 30, message="API on its own address")
            assert client.get(f"{api}/metrics").status_code == 404
            assert client.get(f"{api}/api/v1/workers").status_code == 401
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).raise_for_status()
    finally:
        exporter.stop()
    assert exporter.proc.returncode == 0
    assert TOKEN not in exporter.output()
