"""The run folder: which folder a run writes to, checked before any work, and what a killed run left there.

The rule (ultralytics' ``increment_path``): a new run never writes into a folder holding another run's files.
``train.output_dir = runs/x`` is used when it is missing or empty; otherwise the run goes to ``runs/x2``,
``runs/x3``, ... (the first missing or empty one), and the summary says where (``output_dir``). Two exceptions:
``exist_ok=True`` writes into the folder as it is (its checkpoints are never deleted: rotation only removes
checkpoints of this run; files of the same name are replaced), and a resume whose ``train.output_dir`` is the
checkpoint's own folder continues there.

A ``kill -9`` during an atomic write leaves a hidden temp file (``.checkpoint_00000004.pt.k2j3h4l5.tmp``,
:func:`ssdkit.utils.atomic_write_bytes`); :func:`remove_stale_temp_files` deletes them when a run starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

from ssdkit.errors import ConfigError

__all__ = ["prepare_output_dir", "remove_stale_temp_files", "check_writable_dir"]

logger = logging.getLogger("ssdkit.train")

KEY = "train.output_dir"
# atomic_write_bytes' temp names: "." + the file's name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def _refuse_files(path: Path, key: str) -> None:
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise ConfigError(f"{key}: {path} {where}; give a folder")


def check_writable_dir(path: str | os.PathLike, key: str = KEY) -> Path:
    """Create folder ``path`` if needed and prove it writable (a probe file is written and removed).

    Raises:
        ConfigError: ``{key}: ...`` when ``path`` is a file, lies under a file, or cannot be created or written
            (permissions, a read-only file system), one line naming the path.
    """
    path = Path(path)
    _refuse_files(path, key)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ssdkit-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{key}: {path} is not writable ({e.strerror or e})") from None
    return path


def _is_free(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _same_folder(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def prepare_output_dir(path: str | os.PathLike, *, exist_ok: bool = False,
                       resume: str | os.PathLike | None = None) -> Path:
    """The folder a run writes to (module docstring), created and checked writable.

    Args:
        path: ``train.output_dir``.
        exist_ok: write into ``path`` even when it holds files.
        resume: the checkpoint being resumed; its folder is continued when it is ``path``.

    Raises:
        ConfigError: ``train.output_dir`` is a file, is under a file, or is not writable.
    """
    path = Path(path)
    _refuse_files(path, KEY)
    continuing = resume is not None and _same_folder(Path(resume).parent, path)
    chosen = path
    if not (exist_ok or continuing or _is_free(path)):
        n = 2
        while not _is_free(chosen := path.with_name(f"{path.name}{n}")):
            n += 1
        logger.warning("%s %s holds another run's files; this run writes to %s (train(exist_ok=True) / "
                       "--exist-ok writes into %s)", KEY, path, chosen, path)
    return check_writable_dir(chosen)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Delete the hidden temp files of interrupted atomic writes in ``folder`` and ``folder/report``.

    Returns:
        The names removed (logged).
    """
    removed = []
    for sub in (Path(folder), Path(folder) / "report"):
        if not sub.is_dir():
            continue
        for p in sub.iterdir():
            if p.is_file() and _TEMP_NAME.fullmatch(p.name):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(str(p.relative_to(folder)))
    if removed:
        logger.info("removed %d temp file(s) left by an interrupted write: %s", len(removed), ", ".join(removed))
    return removed
