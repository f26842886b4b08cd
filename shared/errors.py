"""Errors that name where the bad input is: file, key or row, and what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: ``location`` is a key path (``cabinets[1].capacity_kwh``) or a row."""

    location: str
    message: str

    def __str__(self) -> str:
        # Locations and messages may quote the input (a JSON key, a CSV cell): shown on one line.
        location, message = printable(self.location), printable(self.message)
        return f"{location}: {message}" if location else message


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newline, tab, other control characters) as
    its escape (``\\n``), so a message quoting the input stays one line in a log or an answer."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class InputError(ValueError):
    """Bad input (a site file, a day-ahead upload, a schedule): one or more problems, none of it used."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        if not problems:
            raise ValueError("InputError needs at least one problem")
        self.source = source
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__(self.lines()[0] if len(self.problems) == 1 else self._summary())

    def lines(self) -> list[str]:
        """One line per problem, each starting with the source (file name or 'upload')."""
        return [f"{self.source}: {problem}" for problem in self.problems]

    def _summary(self) -> str:
        more = len(self.problems) - 1
        return f"{self.lines()[0]} (and {more} more problem{'s' if more > 1 else ''})"


class ConfigError(InputError):
    """A bad site file."""


class UploadError(InputError):
    """A bad day-ahead upload."""


def pydantic_location(loc: Sequence[int | str]) -> str:
    """Render a pydantic error location as ``cabinets[1].capacity_kwh``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
