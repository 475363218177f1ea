"""Human-readable output: aligned tables and colour (rendered by rich) only where a person is looking."""

from __future__ import annotations

import io
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, Literal

import attrs

__all__ = ["Cell", "Printer", "Style", "color_wanted", "fmt_float", "fmt_pct", "fmt_time", "json_lines"]

Style = Literal["green", "red", "yellow", "bold", "dim", ""]
# Trailing padding, bare or wrapped in a style (rich styles a header's padding too).
_TRAILING = re.compile(r"(?:\x1b\[[0-9;]*m\s*\x1b\[0m|\s)+$")


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
    """Writes lines, tables and key/value blocks to *stream*, coloured when *color* (through rich).

    Output never wraps or truncates (a pipe gets whole lines) and carries no
    trailing spaces; colour uses the 8 standard ANSI colours, never changes the
    alignment, and is off unless *color* (see :func:`color_wanted`).
    """

    stream: IO[str]
    color: bool = False

    def _render(self, renderable: Any) -> str:
        from rich.console import Console

        buffer = io.StringIO()
        console = Console(file=buffer, force_terminal=self.color, no_color=not self.color,
                          color_system="standard" if self.color else None, width=100_000, highlight=False,
                          emoji=False, markup=False, legacy_windows=False, soft_wrap=True)
        console.print(renderable)
        return "\n".join(_TRAILING.sub("", line) for line in buffer.getvalue().rstrip("\n").split("\n"))

    def paint(self, text: str, style: Style) -> str:
        """*text* in *style* when colouring, unchanged otherwise."""
        if not self.color or not style:
            return text
        from rich.text import Text

        return self._render(Text(text, style=style))

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
        """Print *rows* under *headers*, columns left-aligned to their widest cell, two spaces apart."""
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0), header_style="bold")
        for header in headers:
            table.add_column(header, no_wrap=True, overflow="ignore")
        for row in rows:
            cells = [c if isinstance(c, Cell) else Cell(c) for c in row]
            table.add_row(*(Text(c.text, style=c.style or "") for c in cells))
        self.line(self._render(table))

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
