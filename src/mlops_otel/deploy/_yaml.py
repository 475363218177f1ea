"""A small, deterministic YAML emitter for the generated configuration files.

The artifacts only need mappings, sequences, strings, numbers, booleans and
``null``, so instead of depending on PyYAML at run time this module writes
block-style YAML whose scalars are unambiguous under both YAML 1.1 (Go's
``yaml.v2``, which Prometheus uses) and YAML 1.2:

- a string stays plain only when it cannot be read as anything else;
- a multi-line string of printable ASCII becomes a literal block (``|-``), so
  PromQL expressions stay readable;
- any other string becomes a double-quoted scalar in printable ASCII, every
  other character escaped (``\\n``, ``\\x..``, ``\\u....``, ``\\U........``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

__all__ = ["to_yaml"]

# Plain strings start with a letter, "/" or "_" and contain no character with a YAML meaning.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*\Z")
# YAML 1.1 reads these (in any case) as booleans, null or special floats when they are plain.
_RESERVED = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"})
# Lines a literal block can hold verbatim: printable ASCII without trailing blanks; the first
# line (which sets the block's indentation) must not start with a blank either.
_LITERAL_FIRST = re.compile(r"[!-~]([ -~]*[!-~])?\Z")
_LITERAL_LINE = re.compile(r"([ -~]*[!-~])?\Z")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if " " <= char <= "~":
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _quoted(value: str) -> str:
    """A double-quoted scalar in printable ASCII (every other character escaped)."""
    return '"' + "".join(_escape(c) for c in value) + '"'


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    # YAML 1.1 floats need a "." in the mantissa and a sign in the exponent: 1e-05 -> 1.0e-05.
    mantissa, e, exponent = repr(value).partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if e and exponent[0] not in "+-":
        exponent = "+" + exponent
    return mantissa + e + exponent


def _scalar(value: object, indent: int) -> list[str]:
    """A scalar as a first-line fragment plus continuation lines indented by *indent*."""
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, float):
        return [_float(value)]
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED:
            return [value]
        body = value[:-1] if value.endswith("\n") else value
        lines = body.split("\n")
        if (
            len(lines) > 1
            and _LITERAL_FIRST.match(lines[0])
            and lines[-1]
            and all(_LITERAL_LINE.match(line) for line in lines)
        ):
            pad = " " * indent
            chomp = "|" if value.endswith("\n") else "|-"
            return [chomp, *(pad + line if line else "" for line in lines)]
        return [_quoted(value)]
    raise TypeError(f"value must be a mapping, sequence, str, int, float, bool or None, got {value!r}")


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _nested(value: object) -> bool:
    """Whether *value* is a non-empty mapping or sequence (rendered on lines of its own)."""
    if isinstance(value, Mapping) or (isinstance(value, Sequence) and not isinstance(value, str)):
        return len(value) > 0
    return False


def _inline(value: object, indent: int) -> list[str]:
    """An empty collection or a scalar."""
    if isinstance(value, Mapping):
        return ["{}"]
    if _is_sequence(value):
        return ["[]"]
    return _scalar(value, indent)


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"mapping keys must be strings, got {key!r}")
    return _scalar(key, 0)[0] if "\n" not in key else _quoted(key)


def _lines(value: object, indent: int) -> list[str]:
    """Render a non-empty collection as lines indented by *indent* spaces."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            head = f"{pad}{_key(key)}:"
            if _nested(item):
                # Sequences under a key are indented too: easier to read, valid either way.
                out.extend([head, *_lines(item, indent + 2)])
            else:
                first, *rest = _inline(item, indent + 2)
                out.extend([f"{head} {first}", *rest])
        return out
    assert isinstance(value, Sequence)
    for item in value:
        if _nested(item):
            # The first line of a nested collection goes on the "- " line itself.
            first, *rest = _lines(item, indent + 2)
            out.extend([f"{pad}- {first[indent + 2:]}", *rest])
        else:
            first, *rest = _inline(item, indent + 2)
            out.extend([f"{pad}- {first}", *rest])
    return out


def to_yaml(value: Mapping[str, object], *, header: str = "") -> str:
    """Render the mapping *value* as a block-style YAML document.

    *header* lines are written first, as ``#`` comments.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"value must be a mapping at the top level, got {type(value).__name__}")
    comments = [f"# {line}".rstrip() for line in header.splitlines()]
    body = _lines(value, 0) if value else ["{}"]
    return "\n".join([*comments, *body]) + "\n"
