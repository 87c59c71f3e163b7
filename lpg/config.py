"""Validation shared by the frozen config dataclasses."""

from __future__ import annotations

from typing import Any, Iterable


def validate(config: Any, checks: Iterable[tuple[bool, str]]) -> None:
    """Raises ValueError naming the config and what is allowed for the first failed check."""
    for ok, message in checks:
        if not ok:
            raise ValueError(f"{type(config).__name__}: {message} (got {config})")
