"""Small helpers shared across ssdkit: atomic file writes, notebook compatibility."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else ``0o666`` less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder + rename: never a half file.

    The file gets the permissions a plain write would give (the umask's, or the replaced file's), not the
    temp file's private ``0600``, so a teammate can read a shared run folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _naming(path, e, f"cannot write a file in {path.parent}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # a full disk, a failed rename: the error names the temp file, or nothing
            raise _naming(path, e, "cannot write it") from None
        raise


def _naming(path: Path, e: OSError, what: str) -> OSError:
    """``e`` (same errno) naming the file the caller asked for, not the temp file beside it."""
    return OSError(e.errno, f"{what} ({e.strerror or e})", str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_variable(x, requires_grad: bool = False):
    """Identity, for notebooks written against ``ignite._utils.to_variable`` (PyTorch < 0.4).

    Since PyTorch 0.4 a tensor is a Variable; this only exists so old analysis code runs unchanged
    but for its import line.
    """
    if requires_grad and x.is_floating_point():
        x.requires_grad_(True)
    return x
