"""Example Alertmanager webhook receiver: logs one line per alert of each notification.

Stands in for a chat or paging integration in docker-compose.yml. Standard library only::

    python docker/webhook_echo.py --port 8080
"""

from __future__ import annotations

import argparse
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("webhook")


class AlertHandler(BaseHTTPRequestHandler):
    """POST /<receiver>: an Alertmanager webhook payload (version 4); answers 200."""

    def do_POST(self) -> None:
        """Log ``receiver status alertname labels summary`` for every alert."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        for alert in payload.get("alerts", []):
            labels = alert.get("labels", {})
            log.info("receiver=%s status=%s alertname=%s labels=%s summary=%r",
                     self.path.strip("/") or "-", alert.get("status"), labels.get("alertname"),
                     json.dumps(labels, sort_keys=True),
                     alert.get("annotations", {}).get("summary"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default access log (the alert lines say enough)."""


def main() -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ThreadingHTTPServer((args.host, args.port), AlertHandler).serve_forever()


if __name__ == "__main__":
    main()
