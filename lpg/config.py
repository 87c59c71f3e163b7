"""Validation shared by the frozen config dataclasses."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable


def validate(config: Any, checks: Iterable[tuple[bool, str]]) -> None:
    """Raises ValueError for the first failed check: one line naming the config, what is allowed
    and the current value of every field the message names (never the whole config)."""
    for ok, message in checks:
        if not ok:
            names = [f.name for f in dataclasses.fields(config) if re.search(rf"\b{f.name}\b", message)]
            got = ", ".join(f"{name}={getattr(config, name)!r}" for name in names)
            raise ValueError(f"{type(config).__name__}: {message}" + (f" (got {got})" if got else ""))
