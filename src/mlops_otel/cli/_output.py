"""Human-readable output: aligned tables and colour only where a person is looking."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, Literal

import attrs

__all__ = ["Cell", "Printer", "Style", "color_wanted", "fmt_float", "fmt_pct", "fmt_time", "json_lines"]

Style = Literal["green", "red", "yellow", "bold", "dim", ""]
_ANSI = {"green": "\033[32m", "red": "\033[31m", "yellow": "\033[33m", "bold": "\033[1m", "dim": "\033[2m"}
_RESET = "\033[0m"


def color_wanted(mode: str, stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Whether to colour: ``always``/``never``, or ``auto`` = a terminal and ``NO_COLOR`` unset or empty."""
    if mode == "always":
        return True
    if mode == "never" or environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


@attrs.frozen
class Cell:
    """A table cell: its text and an optional colour (applied after alignment)."""

    text: str
    style: Style = ""


def fmt_time(seconds: float | None) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS`` UTC, ``-`` for none."""
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def fmt_float(value: float | None, digits: int = 3) -> str:
    """A number with *digits* decimals, ``-`` for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def fmt_pct(value: float | None, *, signed: bool = False) -> str:
    """A fraction as a percentage, ``-`` for none."""
    if value is None:
        return "-"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


@attrs.define
class Printer:
    """Writes lines, tables and key/value blocks to *stream*, coloured when *color*."""

    stream: IO[str]
    color: bool = False

    def paint(self, text: str, style: Style) -> str:
        """*text* in *style* when colouring, unchanged otherwise."""
        if not self.color or not style:
            return text
        return f"{_ANSI[style]}{text}{_RESET}"

    def line(self, text: str = "") -> None:
        """Print one line."""
        self.stream.write(text + "\n")

    def symbol(self, preferred: str, fallback: str) -> str:
        """*preferred* (an emoji) if the stream can encode it, else *fallback*."""
        encoding = getattr(self.stream, "encoding", None) or "utf-8"
        try:
            preferred.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            return fallback
        return preferred

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Cell | str]]) -> None:
        """Print *rows* under *headers*, columns left-aligned to their widest cell."""
        cells = [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in rows]
        widths = [len(h) for h in headers]
        for row in cells:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell.text))
        last = len(headers) - 1
        self.line("  ".join(self.paint(h.ljust(widths[i]) if i < last else h, "bold")
                            for i, h in enumerate(headers)).rstrip())
        for row in cells:
            parts = [self.paint(c.text.ljust(widths[i]) if i < last else c.text, c.style)
                     for i, c in enumerate(row)]
            self.line("  ".join(parts).rstrip())

    def fields(self, pairs: Sequence[tuple[str, Cell | str]]) -> None:
        """Print ``label  value`` lines with the values aligned."""
        width = max((len(label) for label, _ in pairs), default=0)
        for label, value in pairs:
            cell = value if isinstance(value, Cell) else Cell(value)
            self.line(f"{label.ljust(width)}  {self.paint(cell.text, cell.style)}")


def json_lines(value: Any) -> str:
    """*value* as indented JSON (the CLI's ``--json`` output)."""
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)
