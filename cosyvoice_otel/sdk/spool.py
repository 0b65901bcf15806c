"""Batches on disk while the backend is away: oldest first, under a byte cap, private to the user.

One folder per destination (a Zipkin endpoint, a Kafka servers+topic pair), created 0700; every
file 0600 (spans are redacted, but a trace still tells who called what, when). File names sort
oldest first and carry what replay needs to know about the batch::

    <ns>-<pid>-<seq>[-pN...][.uT][.fF][.s].json

``-pN`` marks a part of a batch that was split; ``.uT`` a batch whose answer timed out T times
(it may already be stored: resent at most once more); ``.fF`` a batch that failed F times while
other batches got through (it is the batch, not the backend: after ``MAX_FILE_FAILURES`` it is
set aside in ``bad/``); ``.s`` a batch being sent (a sender that dies mid-send leaves it so:
it may be stored, so the next replay counts it as one try, a possible duplicate). Nothing
here reads a file larger than ``MAX_FILE_BYTES`` whole: such a file is set aside unread (our
own batches are far smaller).

Replicas may share one folder (the default spool on one host, or one ``--spool-dir`` volume):
a batch is replayed only by the process that holds its ``flock`` (``claim``) from reading it
until it is removed or put back, so two replicas never send the same batch; a file another
replica holds is passed over, not waited for.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import threading
import time
from pathlib import Path

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_FILE_FAILURES = 3
MAX_BAD_BYTES = 16 * 1024 * 1024  # bad/ keeps the newest files up to this size, for a look
STALE_TMP_S = 60.0
_NAME = re.compile(r"^(?P<stem>\d+-(?P<pid>\d+)-\d+(?:-p\d+)*)(?:\.u(?P<tries>\d+))?"
                   r"(?:\.f(?P<fails>\d+))?(?P<flight>\.s)?\.json$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours
    return True


def private_dir(directory: Path) -> None:
    """Create ``directory`` (and missing parents) readable by this user only. The folder must
    be a real directory of this user's: a symlink planted in its place (in a world-writable
    parent) or another user's folder is refused (``OSError``), never followed, chmod-ed or
    written into."""
    missing = []
    for parent in (directory, *directory.parents):
        if os.path.lexists(parent):
            break
        missing.append(parent)
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)  # ELOOP: a link
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise PermissionError(f"{directory} belongs to another user (uid {info.st_uid})")
        os.fchmod(fd, 0o700)  # ours alone (also when an older version made it 0755)
    finally:
        os.close(fd)


def _open_regular(path: Path) -> int:
    """An fd of ``path`` for reading, only if it is a regular file (no symlink followed, a FIFO
    never waited on: ``OSError`` / ``ValueError`` otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError("not a regular file")
    return fd


def _suffix(tries: int, fails: int) -> str:
    return (f".u{tries}" if tries else "") + (f".f{fails}" if fails else "") + ".json"


def _field(path: Path, name: str) -> int:
    match = _NAME.match(path.name)
    return int(match[name]) if match and match[name] else 0


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._seq = 0
        self.last_failure = ""  # why the last put() failed: spool_cap | disk_full
        private_dir(directory)
        self._remove_stale_tmp()
        self.size = sum(size for _path, size in self._listing())

    def _remove_stale_tmp(self) -> None:
        """A process killed (or a disk that filled) mid-write leaves ``*.tmp``: nothing else
        would ever remove them. Another live process's fresh tmp is left alone."""
        now = time.time()
        for tmp in self.directory.glob("*.tmp"):
            match = _NAME.match(tmp.name[:-4])
            try:
                if match and int(match["pid"]) != os.getpid() and pid_alive(int(match["pid"])) \
                        and now - tmp.stat().st_mtime < STALE_TMP_S:
                    continue
                tmp.unlink()
            except OSError:
                pass

    def _listing(self) -> list[tuple[Path, int]]:
        """The waiting batches (regular ``*.json`` files: no link, FIFO or folder) with their
        sizes, oldest first. An entry that vanishes meanwhile (another replica replayed it)
        is passed over."""
        found = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if not entry.name.endswith(".json"):
                        continue
                    try:
                        if entry.is_file(follow_symlinks=False):
                            found.append((Path(entry.path),
                                          entry.stat(follow_symlinks=False).st_size))
                    except OSError:
                        continue
        except OSError:
            return []
        found.sort()
        return found

    def _write(self, name: str, payload: bytes) -> bool:
        tmp = self.directory / (name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            tmp.replace(self.directory / name)
        except OSError:  # a full disk: leave nothing half-written behind
            try:
                tmp.unlink()
            except OSError:
                pass
            return False
        self.size += len(payload)
        return True

    def put(self, payload: bytes, tries: int = 0) -> bool:
        """Keep a batch for later; False when it would pass the cap (or the disk is full)."""
        with self._lock:
            if self.size + len(payload) > self.max_bytes:
                self.last_failure = "spool_cap"
                return False
            self._seq += 1
            stem = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}"
            if self._write(stem + _suffix(tries, 0), payload):
                return True
            self.last_failure = "disk_full"
            return False

    def replace(self, path: Path, parts: list[tuple[bytes, int]],
                whole: bool = False) -> list[tuple[bytes, int]]:
        """Put ``parts`` (payload, tries) where ``path`` was, in its place in the order (``-pN``
        sorts after the stem's other parts and before the next batch). Returns the parts that
        could not be written (a full disk): the caller counts them lost. ``whole``: the one
        part is the file's own batch (only its tries changed): on a full disk the file is
        renamed instead (a rename needs no space), so nothing is lost."""
        match = _NAME.match(path.name)
        stem = match["stem"] if match else path.name[:-5]
        failed: list[tuple[bytes, int]] = []
        with self._lock:  # written first: a crash in between duplicates, never loses
            for i, (payload, tries) in enumerate(parts):
                if not self._write(f"{stem}-p{i}" + _suffix(tries, 0), payload):
                    failed.append((payload, tries))
        if whole and failed and len(parts) == 1 and self._rename(
                path, parts[0][1], _field(path, "fails"), False) != path:
            return []
        self.remove(path)
        return failed

    def files(self) -> list[Path]:
        """Every waiting batch (regular files only), oldest first. The size is read anew from
        the listing: replicas sharing the folder remove each other's batches."""
        listing = self._listing()
        with self._lock:
            self.size = sum(size for _path, size in listing)
        return [path for path, _size in listing]

    def oldest(self) -> Path | None:
        files = self.files()
        return files[0] if files else None

    # -- ownership: replicas may share one spool folder (on one host, or one volume)
    @staticmethod
    def claim(path: Path) -> int | None:
        """Take ``path`` for this process while it is read, sent and removed: an exclusive
        ``flock`` on the file (another process's claim makes this None at once, never a
        wait). None also when the file is gone or is no longer the one listed (another
        replica sent and removed it meanwhile). Give the fd back to ``release``."""
        try:
            fd = _open_regular(path)
        except (OSError, ValueError):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the name still holds the inode we locked (not removed and made anew meanwhile)
            if os.stat(path, follow_symlinks=False).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def release(fd: int | None) -> None:
        if fd is not None:
            try:
                os.close(fd)  # the lock goes with it
            except OSError:
                pass

    def claim_oldest(self) -> tuple[Path, int] | None:
        """The oldest batch no other process holds, claimed."""
        for path in self.files():
            fd = self.claim(path)
            if fd is not None:
                return path, fd
        return None

    def read(self, path: Path) -> bytes:
        """The batch in ``path``; ``ValueError`` (without reading it) when it is too large to
        be one of ours. ``FileNotFoundError`` when another process took it."""
        fd = _open_regular(path)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(fd).st_size
            if size > MAX_FILE_BYTES:
                raise ValueError(f"{size} bytes, over the {MAX_FILE_BYTES}-byte bound of a "
                                 "batch")
            return f.read(MAX_FILE_BYTES + 1)

    def count_spans(self, path: Path) -> int:
        """Spans in a file, read in bounded chunks (a file set aside unread is still counted)."""
        key = b'"traceId"'
        count, carry = 0, b""
        try:
            with os.fdopen(_open_regular(path), "rb") as f:
                while chunk := f.read(1 << 20):
                    data = carry + chunk
                    count += data.count(key)
                    # shorter than the key: a key cut at the boundary is counted once, whole
                    carry = data[-(len(key) - 1):]
        except (OSError, ValueError):
            pass
        return count

    def mark_failed(self, path: Path) -> Path:
        """One more failure of this batch on its own (``.fF``); returns its new path. The
        exporter sets it aside once ``fails(path)`` reaches ``MAX_FILE_FAILURES``."""
        return self._rename(path, _field(path, "tries"), _field(path, "fails") + 1, False)

    def _bad(self) -> Path:
        """``bad/``, made private if it is not there; ``OSError`` when it is anything but a
        real folder (a link planted in its place is never written through)."""
        bad = self.directory / "bad"
        bad.mkdir(mode=0o700, exist_ok=True)
        if bad.is_symlink() or not bad.is_dir():
            raise OSError(f"{bad} is not a folder of ours")
        return bad

    def set_aside(self, path: Path) -> None:
        """Move a batch that cannot be delivered to ``bad/`` (kept for a look, bounded)."""
        try:
            size = path.lstat().st_size
            bad = self._bad()
            path.replace(bad / path.name)
            with self._lock:
                self.size = max(0, self.size - size)
        except OSError:
            self.remove(path)
            return
        self._bound_bad(bad)

    def copy_aside(self, path: Path, payload: bytes) -> None:
        """Keep a copy of a batch in ``bad/`` (it stays in the spool): a look at a batch that
        failed, while what can still be delivered of it is."""
        try:
            bad = self._bad()
            fd = os.open(bad / path.name,
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
        except OSError:
            return
        self._bound_bad(bad)

    @staticmethod
    def _bound_bad(bad: Path) -> None:
        kept = sorted(bad.glob("*.json"), reverse=True)  # newest first
        total = 0
        for old in kept:
            try:
                total += old.lstat().st_size
                if total > MAX_BAD_BYTES:
                    old.unlink()
            except OSError:
                pass

    def remove(self, path: Path) -> None:
        with self._lock:
            try:
                size = path.lstat().st_size
                path.unlink()
                self.size = max(0, self.size - size)
            except OSError:
                pass  # gone already (another replica), or not ours to remove

    @staticmethod
    def tries(path: Path) -> int:
        return _field(path, "tries")

    @staticmethod
    def in_flight(path: Path) -> bool:
        """The batch was being sent when its sender stopped (``.s``): it may be stored."""
        match = _NAME.match(path.name)
        return bool(match and match["flight"])

    def mark(self, path: Path, tries: int, flight: bool) -> Path:
        """Rename a claimed batch to say its tries and whether it is being sent now (``.s``:
        a sender that dies mid-send leaves it so, and the next replica counts a resend as a
        possible duplicate). A rename needs no disk space; on failure the name stays."""
        return self._rename(path, tries, _field(path, "fails"), flight)

    def _rename(self, path: Path, tries: int, fails: int, flight: bool) -> Path:
        """``path`` under the name that says these tries, fails and flight; its new path, or
        ``path`` itself when the rename failed (or changes nothing)."""
        match = _NAME.match(path.name)
        stem = match["stem"] if match else path.name[:-5]
        suffix = _suffix(tries, fails)
        renamed = self.directory / (stem + (suffix[:-5] + ".s.json" if flight else suffix))
        if renamed == path:
            return path
        try:
            path.replace(renamed)
        except OSError:
            return path
        return renamed

    @staticmethod
    def fails(path: Path) -> int:
        return _field(path, "fails")
