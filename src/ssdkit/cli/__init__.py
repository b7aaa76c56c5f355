"""``ssdkit`` command line: parsing only (:mod:`.parser`); every command calls one library function and prints
its result (:mod:`.commands`).

Errors users can cause (``SSDKitError``, and ``OSError`` on a path they gave) print one line
``ssdkit: error: ...`` and exit with status 2. ``--json`` prints strict JSON (NaN and infinities as null).
Choices (formats, metrics, presets) come from :mod:`ssdkit.choices`, the table the library validates against.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ssdkit.cli.parser import build_parser
from ssdkit.errors import SSDKitError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "classes", None) and "," in args.classes and not Path(args.classes).exists():
        args.classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    from ssdkit.engine.interrupt import TrainingInterrupted

    try:
        return args.func(args)
    except TrainingInterrupted as e:  # Ctrl-C / SIGTERM: a checkpoint was saved; the shell's 128 + signal
        print(f"ssdkit: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_status
    except SSDKitError as e:
        print(f"ssdkit: error: {_one_line(str(e))}", file=sys.stderr)
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 1
    except OSError as e:  # a path the user gave: unwritable, a file where a folder should be, a full disk, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"ssdkit: error: {where}{e.strerror or _one_line(str(e))}", file=sys.stderr)
    except MemoryError:
        print("ssdkit: error: out of memory (try a smaller --batch, or smaller images)", file=sys.stderr)
    except KeyboardInterrupt:
        print("ssdkit: interrupted", file=sys.stderr)
        return 130
    return 2


def _one_line(message: str) -> str:
    return " ".join(message.split())


