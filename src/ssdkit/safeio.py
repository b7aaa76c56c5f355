"""Reading files users hand us, safely: text that must be UTF-8, and YAML with limits.

Every failure is one :class:`~ssdkit.errors.SSDKitError` line naming the file (and, for YAML, line and column),
never a traceback, and nothing a file contains can make the reader hang or allocate without bound:

- text: UTF-8 (a byte-order mark is allowed); a file that is not says at which byte; files over ``MAX_TEXT_BYTES``
  are refused before reading;
- YAML: ``yaml.SafeLoader`` (no Python tags) plus limits on what aliases expand to (a "billion laughs" document of
  nested aliases is tiny but expands exponentially when anything walks it, prints it or copies it: refused when it
  would expand to more than ``MAX_YAML_NODES`` nodes, or refers to itself), on the number of aliases and on
  nesting, and duplicate mapping keys refused (``yaml.safe_load`` silently keeps the last one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ssdkit.errors import SSDKitError

__all__ = ["read_text", "load_yaml", "parse_yaml", "MAX_TEXT_BYTES", "MAX_YAML_ALIASES", "MAX_YAML_DEPTH",
           "MAX_YAML_NODES"]

#: Annotation, split, list and config files larger than this are refused (no dataset text file is this large).
MAX_TEXT_BYTES = 1 << 30
#: Aliases (``*name``) a YAML document may use: configs and data YAMLs use a handful at most.
MAX_YAML_ALIASES = 100
#: Nesting depth of YAML collections.
MAX_YAML_DEPTH = 50
#: Nodes a YAML document may expand to, aliases expanded (a big config has a few hundred).
MAX_YAML_NODES = 100_000


def read_text(path: str | os.PathLike, what: str = "file", error: type[SSDKitError] = SSDKitError,
              max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of ``path`` (at most ``max_bytes``); ``what`` names the file's role in messages
    (``"split file"``).

    Raises:
        ``error`` (an SSDKitError subclass): missing, a folder, unreadable, too large or not UTF-8.
    """
    p = Path(path)
    if p.is_dir():
        raise error(f"{p}: is a folder, not a {what}")
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise error(f"{p}: {size} bytes is too large for a {what}")
        data = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{p}: {what} not found") from None
    except OSError as e:
        raise error(f"{p}: cannot read {what} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{p}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save the {what} as "
                    "UTF-8") from None


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader with an alias budget, a depth limit and duplicate keys refused."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name) at line {mark.line + 1}; "
                                     "refused as a possible alias bomb")
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"nested deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):  # noqa: ANN201 - PyYAML's signature
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN201 - PyYAML's signature
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unhashable mapping key at line {key_node.start_mark.line + 1}",
                    key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                    f"{seen[key] + 1}); remove one of them", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root) -> None:  # noqa: ANN001
    """Refuse a node graph that expands (aliases followed) to more than MAX_YAML_NODES nodes, or has a cycle."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else [])
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                raise yaml.YAMLError(f"aliases expand to more than {MAX_YAML_NODES} nodes (line "
                                     f"{node.start_mark.line + 1}); refused as a possible alias bomb")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise yaml.YAMLError(f"an alias refers to itself (line {node.start_mark.line + 1})")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _message(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


def parse_yaml(text: str, where: str, error: type[SSDKitError] = SSDKitError) -> Any:
    """Parse one YAML document with the limits above; ``where`` names its source in messages."""
    try:
        return yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise error(f"{where}: invalid YAML ({_message(e)})") from None
    except RecursionError:
        raise error(f"{where}: invalid YAML (nested too deeply)") from None


def load_yaml(path: str | os.PathLike, what: str = "YAML file", error: type[SSDKitError] = SSDKitError) -> Any:
    """:func:`read_text` + :func:`parse_yaml`."""
    return parse_yaml(read_text(path, what, error), str(path), error)
