"""YAML for the generated configuration files, written by PyYAML.

Block style, keys in the order given, sequences indented under their key,
ASCII only (other characters escaped), no line folding, and multi-line strings
as literal blocks (``|-``) so PromQL expressions stay readable. PyYAML's
resolver is YAML 1.1's, so strings such as ``yes`` or ``1e3`` are quoted and
read back as strings by Go's ``yaml.v2`` (Prometheus) and YAML 1.2 parsers alike.

>>> print(to_yaml({"expr": "sum by (job) (\\n  rate(x[5m])\\n)", "for": "5m", "enabled": "yes"}), end="")
expr: |-
  sum by (job) (
    rate(x[5m])
  )
for: 5m
enabled: 'yes'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["to_yaml"]


def _plain(value: object) -> object:
    """*value* as dicts, lists and scalars; raises :class:`TypeError` for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"mapping keys must be strings, got {key!r}")
            out[key] = _plain(item)
        return out
    if isinstance(value, Sequence):
        return [_plain(item) for item in value]
    raise TypeError(f"value must be a mapping, sequence, str, int, float, bool or None, got {value!r}")


def _dumper() -> Any:
    import yaml

    class Dumper(yaml.SafeDumper):
        """Indents a sequence under its key (easier to read; valid either way)."""

        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            super().increase_indent(flow, False)

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # PyYAML falls back to a quoted scalar itself when a literal block cannot hold the text.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    return Dumper


def to_yaml(value: Mapping[str, object], *, header: str = "") -> str:
    """Render the mapping *value* as a block-style YAML document.

    *header* lines are written first, as ``#`` comments.
    """
    import yaml

    if not isinstance(value, Mapping):
        raise TypeError(f"value must be a mapping at the top level, got {type(value).__name__}")
    document = _plain(value)
    body = yaml.dump(document, Dumper=_dumper(), default_flow_style=False, sort_keys=False, allow_unicode=False,
                     width=1_000_000, indent=2) if value else "{}\n"
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comments + body
