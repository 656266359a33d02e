"""The step's `range`: the builtin range, with membership, count and index in O(1).

CPython answers `x in range(...)`, `.count(x)` and `.index(x)` by a linear
scan in C whenever x is not an int (`'x' in range(10**18)` runs for hours and
ignores every tick, signal and watchdog). Only numbers can equal an int, so
this class answers those three for any value arithmetically; everything else
is the real range's (iteration is the C iterator, which the step's `_getiter_`
ticks per element). Must never expose the wrapped range object itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _as_int(value: Any) -> int | None:
    """The int a value equals, if any (ints, bools, integral floats, real complexes)."""
    kind = type(value)
    if kind is int or kind is bool:
        return int(value)
    if kind is float:
        return int(value) if value.is_integer() else None
    if kind is complex:
        return _as_int(value.real) if value.imag == 0 else None
    return None


class StepRange:
    """range(stop) / range(start, stop[, step]) for step code."""

    __slots__ = ("_r",)

    def __init__(self, *args: Any) -> None:
        self._r = range(*args)

    @classmethod
    def _of(cls, real: range) -> StepRange:
        view = cls.__new__(cls)
        view._r = real
        return view

    @property
    def start(self) -> int:
        return self._r.start

    @property
    def stop(self) -> int:
        return self._r.stop

    @property
    def step(self) -> int:
        return self._r.step

    def __contains__(self, value: Any) -> bool:
        number = _as_int(value)
        return number is not None and number in self._r

    def count(self, value: Any) -> int:
        return 1 if value in self else 0

    def index(self, value: Any) -> int:
        number = _as_int(value)
        if number is None or number not in self._r:
            raise ValueError(f"{value!r} is not in range")
        return self._r.index(number)

    def __iter__(self) -> Iterator[int]:
        return iter(self._r)

    def __reversed__(self) -> Iterator[int]:
        return reversed(self._r)

    def __len__(self) -> int:
        return len(self._r)

    def __bool__(self) -> bool:
        return bool(self._r)

    def __getitem__(self, key: Any) -> Any:
        item = self._r[key]
        return StepRange._of(item) if type(item) is range else item

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepRange):
            return self._r == other._r
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._r)

    def __repr__(self) -> str:
        return repr(self._r)


StepRange.__name__ = StepRange.__qualname__ = "range"
