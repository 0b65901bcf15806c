"""The spool's bad/ corner: batches set aside or copied there are private (0700 folder, 0600
files), bad/ keeps the newest files up to its bound, and a live process id is told from a
gone one without signalling it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from cosyvoice_otel.sdk import spool as spool_module
from cosyvoice_otel.sdk.spool import Spool, pid_alive


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def batch(spool: Spool, name: str, size: int):
    path = spool.directory / name
    path.write_bytes(b"x" * size)
    return path


@pytest.mark.parametrize("how", ["set_aside", "copy_aside"])
def test_bad_holds_private_files_in_a_private_folder_twice_over(tmp_path, how) -> None:
    spool = Spool(tmp_path / "spool", 1 << 20)
    for i in range(2):  # the second finds bad/ there already
        path = batch(spool, f"1-{os.getpid()}-{i}.json", 10)
        if how == "set_aside":
            spool.set_aside(path)
        else:
            spool.copy_aside(path, b"payload")
    bad = spool.directory / "bad"
    assert mode(bad) == 0o700
    names = sorted(p.name for p in bad.iterdir())
    assert names == [f"1-{os.getpid()}-0.json", f"1-{os.getpid()}-1.json"]
    if how == "copy_aside":
        assert all(mode(bad / name) == 0o600 for name in names)
        assert (bad / names[0]).read_bytes() == b"payload"


def test_bad_keeps_the_newest_files_up_to_its_bound(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(spool_module, "MAX_BAD_BYTES", 25)
    spool = Spool(tmp_path / "spool", 1 << 20)
    for i in range(4):  # names sort by time: the later, the newer
        spool.set_aside(batch(spool, f"{100 + i}-1-0.json", 10))
    kept = sorted(p.name for p in (spool.directory / "bad").iterdir())
    assert kept == ["102-1-0.json", "103-1-0.json"]  # 20 bytes; a third would be 30
    spool.set_aside(batch(spool, "104-1-0.json", 25))  # exactly the bound: kept alone
    assert sorted(p.name for p in (spool.directory / "bad").iterdir()) == ["104-1-0.json"]


def test_a_live_process_is_alive_and_a_reaped_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(child.pid)
        with pytest.raises(subprocess.TimeoutExpired):  # asked, not signalled: it lives on
            child.wait(timeout=0.5)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(1)  # exists, not ours (or ours when root): alive either way


# ------------------------------------------------------------- names, sizes, edges

def test_a_reopened_spool_knows_the_size_of_its_batches_and_nothing_else(tmp_path) -> None:
    first = Spool(tmp_path, 10_000)
    assert first.put(b"[1,2,3]") and first.put(b"[4]", 2)
    (first.directory / "notes.txt").write_bytes(b"x" * 100)  # not a batch
    assert Spool(tmp_path, 10_000).size == first.size == 10


def test_a_failed_write_is_reported_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    spool = Spool(tmp_path, 10_000)

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.Path, "replace", full)
    assert spool.put(b"[1]") is False
    assert list(spool.directory.iterdir()) == [] and spool.size == 0


def test_a_file_of_exactly_the_bound_is_read(tmp_path, monkeypatch) -> None:
    sp = spool_module
    spool = Spool(tmp_path, 10_000)
    spool.put(b"[1,2,3]")
    (path,) = spool.files()
    monkeypatch.setattr(sp, "MAX_FILE_BYTES", 7)
    assert spool.read(path) == b"[1,2,3]"
    monkeypatch.setattr(sp, "MAX_FILE_BYTES", 6)
    with pytest.raises(ValueError):
        spool.read(path)


@pytest.mark.parametrize(("name", "after"), [
    ("00000000000000000001-7-000001.u2.json", "00000000000000000001-7-000001.u2.f1.json"),
    ("00000000000000000001-7-000001.u2.f1.json", "00000000000000000001-7-000001.u2.f2.json"),
    ("odd.json", "odd.f1.json"),  # a name not ours: its stem kept whole
])
def test_a_failure_is_counted_in_the_name_and_its_tries_kept(tmp_path, name, after) -> None:
    spool = Spool(tmp_path, 10_000)
    path = spool.directory / name
    path.write_bytes(b"[1]")
    assert spool.mark_failed(path).name == after
