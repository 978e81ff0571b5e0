"""The users of the job browser: a file of ``name:role:hash`` lines (``--ui-users-file``).

One user per line, like an htpasswd file::

    # celery-jobmon ui users
    alice:operator:$argon2id$v=19$m=65536,t=3,p=4$...
    bob:viewer:$argon2id$v=19$m=65536,t=3,p=4$...

``role`` is :data:`VIEWER` (reads) or :data:`OPERATOR` (reads, retry, cancel); the hash is
argon2id (argon2-cffi's defaults), written by ``celery-jobmon ui-user add``. Blank lines and
lines starting with ``#`` are ignored. Names are 1..64 characters of letters, digits and
``._@-``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger(__name__)

VIEWER = "viewer"
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_HASHER = PasswordHasher()
#: Verified against when the name is unknown, so an unknown name costs as long as a wrong
#: password (no user enumeration by timing).
_DUMMY_HASH = _HASHER.hash("celery-jobmon: no such user")


class UsersFileError(ValueError):
    """The users file cannot be read or has invalid lines (every problem, one per line)."""


@dataclass(frozen=True)
class User:
    """A user of the job browser: ``name``, ``role`` (viewer/operator), argon2 ``password_hash``."""

    name: str
    role: str
    password_hash: str

    @property
    def can_act(self) -> bool:
        """``True`` for operators: they may retry and cancel."""
        return self.role == OPERATOR


def check_name(name: str) -> str:
    """``name`` when it is a valid user name.

    Raises:
        UsersFileError: otherwise.

    """
    if not _NAME.fullmatch(name):
        raise UsersFileError(f"user name {name[:64]!r}: 1 to 64 letters, digits or ._@-")
    return name


def parse_users(text: str, source: str = "users file") -> dict[str, User]:
    """The users of a users file's ``text``, by name.

    Raises:
        UsersFileError: every bad line (``source:line: problem``) at once; a name twice.

    """
    users: dict[str, User] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, password_hash = rest.partition(":")
        where = f"{source}:{number}"
        if not _NAME.fullmatch(name):
            problems.append(f"{where}: the name must be 1 to 64 letters, digits or ._@-")
        elif role not in ROLES:
            problems.append(f"{where}: role must be {' or '.join(ROLES)}")
        elif not password_hash.startswith("$argon2"):
            problems.append(f"{where}: not an argon2 hash (write it with "
                            "`celery-jobmon ui-user add`)")
        elif name in users:
            problems.append(f"{where}: user {name!r} is listed twice")
        else:
            users[name] = User(name, role, password_hash)
    if problems:
        raise UsersFileError("\n".join(problems))
    return users


def load_users(path: str) -> dict[str, User]:
    """The users of the file at ``path``.

    Raises:
        UsersFileError: it cannot be read, or :func:`parse_users` refuses it.

    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
                             ) from None
    return parse_users(text, path)


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (argon2-cffi's default parameters)."""
    return _HASHER.hash(password)


def missing_directories(path: str) -> list[str]:
    """The directories above the file ``path`` that do not exist yet, outermost first (what
    :func:`add_user` creates): ``["/etc/celery-jobmon"]`` for ``/etc/celery-jobmon/ui-users``
    on a new host, ``[]`` when its directory exists.
    """
    missing: list[str] = []
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(directory):
        missing.insert(0, directory)
        directory = os.path.dirname(directory)
    return missing


def add_user(path: str, name: str, role: str, password: str) -> bool:
    """Add ``name`` with ``role`` and the hash of ``password`` to the users file at ``path``
    (created with mode 0600 when missing, in directories created with mode 0700 when missing:
    :func:`missing_directories`), or replace that user's line.

    Returns:
        ``True`` when the user was new, ``False`` when replaced.

    Raises:
        UsersFileError: a bad name or role, an unreadable or invalid file, a directory that
            cannot be created, a file that cannot be written (the message names which).

    """
    check_name(name)
    if role not in ROLES:
        raise UsersFileError(f"role must be {' or '.join(ROLES)}")
    lines: list[str] = []
    if os.path.exists(path):
        load_users(path)  # refuse to rewrite a file that is already broken
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    entry = f"{name}:{role}:{hash_password(password)}"
    new = True
    for index, line in enumerate(lines):
        if line.strip().partition(":")[0] == name:
            lines[index], new = entry, False
    if new:
        lines.append(entry)
    for directory in missing_directories(path):
        try:  # 0700: the file holds password hashes; chmod, as mkdir's mode passes the umask
            os.mkdir(directory, 0o700)
            os.chmod(directory, 0o700)
        except OSError as exc:
            raise UsersFileError(f"cannot create the directory {directory}: "
                                 f"{exc.strerror or exc}") from None
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".ui-users-")
    except OSError as exc:
        raise UsersFileError(f"cannot write in {directory}: {exc.strerror or exc}") from None
    with os.fdopen(handle, "w", encoding="utf-8") as file:  # mkstemp: mode 0600
        file.write("\n".join(lines) + "\n")
    os.replace(temporary, path)
    return new


def authenticate(users: Mapping[str, User], name: str, password: str) -> User | None:
    """The user whose ``name`` and ``password`` match, else ``None``.

    An unknown name is verified against a dummy hash, so that it takes as long as a wrong
    password; argon2 compares in constant time.
    """
    user = users.get(name)
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return user
