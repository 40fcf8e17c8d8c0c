"""Parsing ``liftlm eval``'s list flags (``--methods icl,lift``, ``--lengths 1000,2000``): a ``LiftError`` naming
the flag for an empty list, an unknown item or a bad number."""
from __future__ import annotations

from ..errors import LiftError


def items(value: str | None, flag: str) -> list[str]:
    """The comma-separated items of ``value`` (none when the flag was not given)."""
    found = [x.strip() for x in (value or "").split(",") if x.strip()]
    if value is not None and not found:
        raise LiftError(f"{flag} is empty; give a comma-separated list")
    return found


def choices(value: str | None, flag: str, allowed: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
    """The items of ``value``, each one of ``allowed``, without repeats (``default`` when not given)."""
    chosen = items(value, flag) or list(default)
    bad = [x for x in chosen if x not in allowed]
    if bad:
        raise LiftError(f"{flag}: unknown {', '.join(repr(b) for b in bad)}; choose among {', '.join(allowed)}")
    return tuple(dict.fromkeys(chosen))


def numbers(value: str | None, flag: str, kind: type, default: tuple) -> tuple:
    """The items of ``value`` as ``kind`` (int or float), without repeats (``default`` when not given)."""
    found = items(value, flag)
    if not found:
        return default
    try:
        parsed = tuple(kind(x) for x in found)
    except ValueError:
        raise LiftError(f"{flag}: expected comma-separated {kind.__name__}s (got {value!r})") from None
    return tuple(dict.fromkeys(parsed))


def positive(value: int | None, flag: str) -> int | None:
    if value is not None and value < 1:
        raise LiftError(f"{flag} must be at least 1 (got {value})")
    return value
