"""Strict value readers: the errors that name a decoded value and its place (pure).

The gossip codec (mesh/_wire/gossip.py) and the catalog's ``from_wire`` forms
(mesh/_core/catalog.py) check what msgpack decoded one field at a time; each reader takes
``where``, the place to name, and raises :class:`ProtocolError` as
``"{where}: expected {what}, got {value}"`` with the value shown in at most 60 characters.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from typing import Final, NoReturn

from .._errors import ProtocolError

__all__ = ["SHOWN_MOST", "fail", "flag", "show", "show_repr"]

#: The most characters of a value an error message shows.
SHOWN_MOST: Final = 60

#: Bounded repr: a decoded value may nest ~1,000 deep, where repr() itself raises
#: RecursionError.
_bounded = reprlib.Repr()
_bounded.maxlevel = 3
_bounded.maxstring = _bounded.maxother = SHOWN_MOST


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_MOST else text[: SHOWN_MOST - 3] + "..."


def show(value: object) -> str:
    """``value`` for an error message: reprlib's repr (3 levels deep, 60 characters a string),
    cut to 60 characters; safe for a value nested at any depth."""
    return _cut(_bounded.repr(value))


def show_repr(value: object) -> str:
    """``repr(value)`` cut to 60 characters: the catalog's form, kept so its messages stay as
    they are (repr raises RecursionError on a value nested ~1,000 deep; the gossip codec
    turns that into a ProtocolError)."""
    return _cut(repr(value))


def fail(
    where: str, expected: str, value: object, shown: Callable[[object], str] = show
) -> NoReturn:
    """Raise ``ProtocolError("{where}: expected {expected}, got {shown(value)}")``."""
    raise ProtocolError(f"{where}: expected {expected}, got {shown(value)}")


def flag(where: str, value: object, shown: Callable[[object], str] = show) -> bool:
    """``value`` if it is a bool (not 0 or 1), else the error naming ``where``."""
    if type(value) is not bool:
        fail(where, "true or false", value, shown)
    return value
