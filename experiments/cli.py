"""Command-line plumbing shared by the entry points: presets and `--set key=value` overrides."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Mapping

from lpg.evaluate import check_env_name


def _coerce(text: str, current: Any, name: str) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--set {name}: expected true/false, got {text!r}")
    if isinstance(current, tuple):
        items = [t for t in text.split(",") if t]
        kind = type(current[0]) if current else str
        return tuple(_coerce(t, kind(), name) if kind is not str else t for t in items)
    if current is None:
        return None if text.lower() == "none" else _guess(text)
    try:
        return type(current)(text)
    except (TypeError, ValueError):
        raise ValueError(f"--set {name}: expected a {type(current).__name__}, got {text!r}") from None


def _guess(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """`["meta_lr=3e-4", "rule.hidden=64", "envs=a,b"]` applied to a (nested) frozen dataclass."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set takes key=value, got {item!r}")
        key, text = item.split("=", 1)
        config = _replace_path(config, key.split("."), text, key)
    return config


def _replace_path(config: Any, path: list[str], text: str, full: str) -> Any:
    names = [f.name for f in dataclasses.fields(config)]
    if path[0] not in names:
        raise ValueError(f"--set {full}: {type(config).__name__} has no field {path[0]!r}; fields: {names}")
    current = getattr(config, path[0])
    if len(path) > 1:
        value = _replace_path(current, path[1:], text, full)
    else:
        value = _coerce(text, current, full)
    return dataclasses.replace(config, **{path[0]: value})


def pick_preset(presets: Mapping[str, Any], name: str) -> Any:
    if name not in presets:
        raise SystemExit(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
    return presets[name]


def add_common_args(parser: argparse.ArgumentParser, presets: Mapping[str, Any], default: str) -> None:
    parser.add_argument("--preset", default=default, choices=list(presets), help="named configuration")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set meta_lr=3e-4 --set rule.hidden=64")
    parser.add_argument("--run-dir", default=None, help="where metrics, checkpoints and results go")
    parser.add_argument("--no-resume", action="store_true", help="start over even if the run dir has a checkpoint")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard scalars to RUN_DIR/tensorboard (needs the [tensorboard] extra)")


def check_rule_and_envs(parser: argparse.ArgumentParser, rule: str, env_names: list[str]) -> None:
    """Usage errors for a missing rule file or an unknown environment name."""
    if not Path(rule).exists():
        parser.error(f"--rule {rule}: no such file (meta-training writes RUN_DIR/rule.msgpack)")
    for name in env_names:
        try:
            check_env_name(name)
        except ValueError as e:
            parser.error(str(e))
