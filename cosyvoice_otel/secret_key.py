"""The per-deployment secret of the input fingerprint (``cosyvoice.input.fingerprint``).

A fingerprint is an HMAC: equal inputs give equal fingerprints under one secret, and without the
secret nobody can test a guess ("is this request 'hello'?"), which a plain hash of a short text
would allow. The secret is, in order: ``COSYVOICE_TRACED_FINGERPRINT_SECRET`` (never rendered,
never printed), else a key file (``--fingerprint-key``; ``auto`` is ``fingerprint.key`` in the
cache root), generated once with 32 random bytes and mode 0600 when absent. Two deployments
compare the same inputs only when they share the secret (the same file, or the variable).

The file is read like a credential: a regular file (no symlink followed, a FIFO never waited
on), owned by this user, readable by no one else (like ssh's keys: a key others can read is
refused), at most 4 KiB, at least 16 bytes. Ground floor: the launcher checks it (one line and
exit 2) and the traced process reads it (one warning, then no fingerprint).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping

from cosyvoice_otel.settings import cache_dir

SECRET_VAR = "COSYVOICE_TRACED_FINGERPRINT_SECRET"
MAX_BYTES = 4096
MIN_BYTES = 16


class KeyFileError(ValueError):
    """The key cannot be used; the message is one line naming the file and why."""


def key_path(setting: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The key file the setting names (None for ``off``)."""
    if setting == "off":
        return None
    return os.path.join(cache_dir(environ), "fingerprint.key") if setting == "auto" else setting


def load(setting: str, environ: Mapping[str, str] | None = None,
         create: bool = True) -> bytes | None:
    """The secret, or None when the fingerprint is off; ``KeyFileError`` when it cannot be had."""
    environ = os.environ if environ is None else environ
    if setting == "off":
        return None
    secret = environ.get(SECRET_VAR, "")
    if secret:
        if len(secret.encode()) < MIN_BYTES:
            raise KeyFileError(f"{SECRET_VAR} is shorter than {MIN_BYTES} bytes: too easy to "
                               "guess")
        return secret.encode()
    path = key_path(setting, environ)
    assert path is not None
    try:
        return _read(path)
    except FileNotFoundError:
        if not create:
            raise KeyFileError(f"fingerprint key {path}: no such file") from None
    try:
        _create(path)
    except FileExistsError:  # another process made it first: theirs is the key
        pass
    except OSError as exc:
        raise KeyFileError(f"cannot create the fingerprint key {path}: "
                           f"{exc.strerror or exc}") from None
    try:
        return _read(path)
    except FileNotFoundError:
        raise KeyFileError(f"fingerprint key {path}: vanished after it was made") from None


def _read(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: a symlink; EACCES; ENOTDIR
        why = "a symlink (refused)" if os.path.islink(path) else (exc.strerror or str(exc))
        raise KeyFileError(f"fingerprint key {path}: {why}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"fingerprint key {path}: not a regular file")
        if info.st_uid != os.geteuid():
            raise KeyFileError(f"fingerprint key {path}: belongs to another user "
                               f"(uid {info.st_uid})")
        if info.st_mode & 0o077:
            raise KeyFileError(f"fingerprint key {path}: readable by others (mode "
                               f"{stat.S_IMODE(info.st_mode):o}); chmod 600 it")
        if info.st_size > MAX_BYTES:
            raise KeyFileError(f"fingerprint key {path}: over {MAX_BYTES} bytes")
        data = os.read(fd, MAX_BYTES + 1).strip()
    finally:
        os.close(fd)
    if len(data) < MIN_BYTES:
        raise KeyFileError(f"fingerprint key {path}: shorter than {MIN_BYTES} bytes")
    return data


def _create(path: str) -> None:
    """32 random bytes (hex), mode 0600, written whole to a file of its own, then linked into
    place: another process starting at the same moment (four apps launched at once on a fresh
    machine) sees no key or a whole one, never a half-written one, and ``FileExistsError``
    when it lost the race (its key is then the winner's). A key a full disk cut short is
    removed, so the next start tries again."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    draft = os.path.join(directory, f".fingerprint-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            data = (secrets.token_hex(32) + "\n").encode()
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(draft, path)  # atomic, and never over an existing key (FileExistsError)
    finally:
        os.unlink(draft)
