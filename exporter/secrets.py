"""Keep secrets out of logs and output: URL masking and a redacting log formatter.

Secrets are the passwords in the broker and history URLs (each URL of a ``;`` failover list),
password-like transport options (``password``, ``sentinel_kwargs.password``) and the API token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kombu.utils.url import maybe_sanitize_url

MASK = "**"
#: ``scheme://user:password@`` anywhere in a text (an error message that quotes a URL).
_URL_SECRET_RE = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@")
_PASSWORD_KEYS = frozenset({"password", "sentinel_password", "ssl_password"})


def mask_url(url: str) -> str:
    """Return ``url`` with every password replaced by ``**``.

    Handles failover lists (``redis://:pw@a;redis://:pw@b``) URL by URL, which kombu's
    ``maybe_sanitize_url`` alone does not; an unparseable entry becomes ``<unparseable URL>``.
    """
    masked = []
    for part in url.split(";"):
        try:
            masked.append(maybe_sanitize_url(part, mask=MASK))
        except ValueError:
            masked.append("<unparseable URL>")
    return ";".join(masked)


def mask_urls_in(text: str) -> str:
    """Replace the password of every ``scheme://user:password@host`` inside ``text`` (an error
    message quoting a URL) with ``**``.
    """
    return _URL_SECRET_RE.sub(rf"\1{MASK}@", text)


def url_passwords(url: str) -> set[str]:
    """Passwords of every URL in a ``;`` list, as written and percent-decoded."""
    found: set[str] = set()
    for part in url.split(";"):
        try:
            password = urlsplit(part).password
        except ValueError:
            continue
        if password:
            found.update({password, unquote(password), quote(unquote(password), safe="")})
    return found


def option_passwords(options: Mapping[str, Any]) -> set[str]:
    """Password-like values in (nested) transport options such as ``sentinel_kwargs``."""
    found: set[str] = set()
    for key, value in options.items():
        if isinstance(value, Mapping):
            found |= option_passwords(value)
        elif key in _PASSWORD_KEYS and isinstance(value, str) and value:
            found.add(value)
    return found


class Redactor:
    """Replaces every one of ``secrets`` in a text with ``**`` (longest first, so a secret
    containing another is replaced whole; empty values are ignored).
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Return ``text`` with the secrets masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and replaces every secret value in its output (message, arguments,
    traceback) with ``**``. Secrets shorter than 4 characters are still redacted.
    """

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        self.redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """Format with the inner formatter, then redact."""
        return self.redact(self.inner.format(record))
