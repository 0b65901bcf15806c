"""The fingerprint's secret: read like a credential, made once, refused with one line (hostile
key files: symlinks, FIFOs, directories, others' files, world-readable, huge, short, a full
disk), and the launcher's check before the app starts."""

from __future__ import annotations

import errno
import os
import stat
import subprocess

import pytest

from cosyvoice_otel import secret_key
from cosyvoice_otel.settings import parse_key_setting, parse_millis

from ..support.helpers import BIN, app_env

SECRET = "0123456789abcdef0123456789abcdef"


def test_auto_makes_a_key_once_mode_0600_and_reads_the_same_key_again(tmp_path) -> None:
    environ = {"COSYVOICE_TRACED_CACHE": str(tmp_path / "cache")}
    first = secret_key.load("auto", environ)
    path = tmp_path / "cache" / "fingerprint.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(first) == 64 and secret_key.load("auto", environ) == first  # made once
    assert secret_key.load(str(path), environ) == first


def test_the_variable_wins_and_off_is_off(tmp_path) -> None:
    environ = {secret_key.SECRET_VAR: SECRET, "COSYVOICE_TRACED_CACHE": str(tmp_path)}
    assert secret_key.load("auto", environ) == SECRET.encode()
    assert not (tmp_path / "fingerprint.key").exists()  # no file made when the variable rules
    assert secret_key.load("off", environ) is None
    with pytest.raises(secret_key.KeyFileError, match="shorter than 16"):
        secret_key.load("auto", {secret_key.SECRET_VAR: "short"})


def _fifo(path):
    os.mkfifo(path)


def _symlink(path):
    target = path.parent / "real.key"
    target.write_text(SECRET)
    target.chmod(0o600)
    path.symlink_to(target)


def _world(path):
    path.write_text(SECRET)
    path.chmod(0o644)


def _huge(path):
    path.write_text(SECRET * 200)
    path.chmod(0o600)


def _short(path):
    path.write_text("tiny\n")
    path.chmod(0o600)


def _directory(path):
    path.mkdir()


@pytest.mark.parametrize(("make", "why"), [
    (_fifo, "not a regular file"), (_symlink, "symlink"), (_world, "readable by others"),
    (_huge, "over 4096 bytes"), (_short, "shorter than 16"), (_directory, "not a regular file"),
])
def test_a_hostile_key_file_is_refused_with_one_line(tmp_path, make, why) -> None:
    path = tmp_path / "fingerprint.key"
    make(path)
    with pytest.raises(secret_key.KeyFileError, match=why) as caught:
        secret_key.load(str(path), {})
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_another_users_key_is_refused(tmp_path, monkeypatch) -> None:
    path = tmp_path / "k"
    path.write_text(SECRET)
    path.chmod(0o600)
    monkeypatch.setattr(secret_key.os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(secret_key.KeyFileError, match="belongs to another user"):
        secret_key.load(str(path), {})


def test_a_full_disk_leaves_no_half_key_behind(tmp_path, monkeypatch) -> None:
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(secret_key.os, "write", full)
    path = tmp_path / "k"
    with pytest.raises(secret_key.KeyFileError, match="cannot create .*No space left on device"):
        secret_key.load(str(path), {})
    assert not path.exists()  # the next start tries again
    assert list(tmp_path.iterdir()) == []  # and no draft is left behind


def test_a_key_under_a_file_cannot_be_made(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(secret_key.KeyFileError, match="Not a directory"):
        secret_key.load(str(blocker / "fingerprint.key"), {})



@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("100", 100.0), ("250ms", 250.0),
                                             (" 60000 ", 60000.0)])
def test_milliseconds_parse(text, value) -> None:
    assert parse_millis(text) == value


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "60001", "1e309", "ten", "", "100s"])
def test_bad_milliseconds_are_refused(text) -> None:
    with pytest.raises(ValueError, match="milliseconds"):
        parse_millis(text)


def test_key_settings_parse() -> None:
    assert parse_key_setting(" AUTO ") == "auto" and parse_key_setting("off") == "off"
    assert parse_key_setting("~/k").startswith(os.path.expanduser("~"))
    with pytest.raises(ValueError):
        parse_key_setting("  ")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_run_refuses_a_bad_key_before_the_app_starts(tmp_path, how) -> None:
    bad = tmp_path / "k"
    _world(bad)
    marker = tmp_path / "ran"
    argv = [str(BIN / "cosyvoice-traced"), "run"]
    env = app_env()
    if how == "flag":
        argv += ["--fingerprint-key", str(bad)]
    else:
        env["COSYVOICE_TRACED_FINGERPRINT_KEY"] = str(bad)
    out = subprocess.run([*argv, "--", "python", "-c", f"open({str(marker)!r}, 'w')"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "readable by others" in out.stderr
    assert "Traceback" not in out.stderr and not marker.exists()
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_traced_process_warns_once_and_goes_on_without_a_fingerprint(tmp_path,
                                                                        caplog) -> None:
    from cosyvoice_otel.instrumentation.options import Options
    from cosyvoice_otel.settings import Settings

    bad = tmp_path / "k"
    _world(bad)
    settings = Settings.resolve({"fingerprint_key": str(bad)}, environ={})
    options = Options.resolve({}, settings)
    assert options.fingerprint_secret is None
    assert [r.message for r in caplog.records if "readable by others" in r.message]


def test_apps_starting_at_once_on_a_fresh_machine_share_one_whole_key(tmp_path) -> None:
    """Eight processes make the key at the same moment: each reads a whole key, the same one
    (a reader never sees it half-written), and no draft is left behind."""
    import sys

    cache = tmp_path / "cache"
    script = ("import sys; from cosyvoice_otel import secret_key; "
              f"sys.stdout.write(secret_key.load('auto', {{'COSYVOICE_TRACED_CACHE': "
              f"{str(cache)!r}}}).decode())")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in results]
    keys = {out for out, _ in results}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert [p.name for p in cache.iterdir()] == ["fingerprint.key"]


def test_a_key_being_written_is_never_read_half_made(tmp_path, monkeypatch) -> None:
    """The race, made wide: the first process's write is slow; a second one starting then
    must get the same whole key, not 'shorter than 16 bytes' from an empty file."""
    import threading
    import time

    real_write = os.write
    first = threading.Event()

    def slow_write(fd, data):
        if not first.is_set():
            first.set()
            time.sleep(0.3)  # the other starts meanwhile
        return real_write(fd, data)

    monkeypatch.setattr(secret_key.os, "write", slow_write)
    environ = {"COSYVOICE_TRACED_CACHE": str(tmp_path)}
    got: dict[str, object] = {}

    def load(name: str) -> None:
        try:
            got[name] = secret_key.load("auto", environ)
        except secret_key.KeyFileError as exc:
            got[name] = exc

    slow = threading.Thread(target=load, args=("slow",))
    slow.start()
    assert first.wait(5)
    load("fast")
    slow.join(10)
    assert isinstance(got["fast"], bytes) and got["fast"] == got["slow"], got
