"""Atomic writes: never a half file, and the permissions a plain write would give (the umask's)."""

import os

import pytest

from ssdkit.utils import atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def test_new_files_follow_the_umask(tmp_path, umask):
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    umask(0o077)
    atomic_write_text(tmp_path / "b.txt", "y")
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    umask(0o002)
    atomic_write_text(tmp_path / "sub" / "c.txt", "z")  # the folder is created too
    assert (tmp_path / "sub" / "c.txt").stat().st_mode & 0o777 == 0o664


def test_a_replaced_file_keeps_its_mode_and_no_temp_file_is_left(tmp_path, umask):
    path = tmp_path / "keep.txt"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_failed_write_leaves_the_old_file(tmp_path, umask):
    path = tmp_path / "x.txt"
    path.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # not bytes: the write fails before the rename
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_write_errors_name_the_file_asked_for(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "x.txt"
    path.write_text("old")

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", src)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(path, b"new")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert "No space left on device" in info.value.strerror
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]  # temp file removed
    with pytest.raises(OSError) as info:
        atomic_write_bytes("/proc/ssdkit-test.txt", b"x")  # a folder that refuses new files, even to root
    assert info.value.filename == "/proc/ssdkit-test.txt" and "cannot write a file in /proc" in info.value.strerror
