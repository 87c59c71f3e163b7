"""Command-line plumbing shared by the entry points.

Every entry point takes the same common flags (`add_common_args`): `--preset`, `--set key=value`
(any field of the preset's frozen config dataclass; `--help` lists them), `--run-dir`,
`--no-resume`, `--tensorboard` and `--list`. User errors end as one line on stderr and exit
code 2 (`fail`); `entry_point` turns run-directory refusals and interrupts into one line too.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

from lpg.evaluate import check_env_name
from lpg.runs import Interrupted, RunDirError

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def fail(message: str, code: int = EXIT_USAGE, label: str = "error") -> typing.NoReturn:
    """Ends the program with one line on stderr (a user error: exit code 2)."""
    prog = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "lpg"
    print(f"{prog}: {label}: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(code)


class Parser(argparse.ArgumentParser):
    """An entry point's parser: the docstring as description, and usage errors as one line."""

    def __init__(self, doc: str | None, **kwargs):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        fail(f"{message} (see --help)")


def entry_point(main: Callable) -> Callable:
    """Wraps an entry point's `main`: a run-directory refusal, an environment that fails its check,
    or SIGINT/SIGTERM end as one line (exit 2, or 130 when interrupted), never a traceback."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        from envs.check import EnvCheckError

        try:
            return main(*args, **kwargs)
        except (RunDirError, EnvCheckError) as e:
            fail(str(e))
        except Interrupted as e:
            fail(str(e), EXIT_INTERRUPTED, label="interrupted")
        except KeyboardInterrupt:
            fail("before the first chunk finished; nothing new was saved (rerun the same command to resume "
                 "from the last checkpoint, if any)", EXIT_INTERRUPTED, label="interrupted")

    return wrapped


# ------------------------------------------------------------------------------ --set
def _article(kind: str) -> str:
    return "an" if kind[:1] in "aeiou" else "a"


def _coerce(text: str, current: Any, name: str, hint: Any = None) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"--set {name}: expected true or false, got {text!r}")
    if isinstance(current, tuple) or (current is None and "tuple" in str(hint)):
        items = [t for t in text.split(",") if t]
        kind = type(current[0]) if current else None
        if kind is None or kind is str:
            return tuple(items if kind is str else (_guess(t) for t in items))
        return tuple(_coerce(t, kind(), name) for t in items)
    if current is None:
        return None if text.lower() == "none" else _guess(text)
    try:
        return type(current)(text)
    except (TypeError, ValueError):
        kind = type(current).__name__
        raise ValueError(f"--set {name}: expected {_article(kind)} {kind}, got {text!r}") from None


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
    fields = {f.name: f for f in dataclasses.fields(config)}
    if path[0] not in fields:
        raise ValueError(f"--set {full}: {type(config).__name__} has no field {path[0]!r}; "
                         f"fields: {', '.join(fields)} (--help lists them with their values)")
    current = getattr(config, path[0])
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"--set {full}: {path[0]!r} is not a nested config")
        value = _replace_path(current, path[1:], text, full)
    else:
        value = _coerce(text, current, full, fields[path[0]].type)
    return dataclasses.replace(config, **{path[0]: value})


def settable_fields(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, current value) of every field `--set` can change, nested configs flattened."""
    found = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            found.extend(settable_fields(value, f"{prefix}{f.name}."))
        else:
            found.append((f"{prefix}{f.name}", value))
    return found


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


# ------------------------------------------------------------------------------ common flags
def pick_preset(presets: Mapping[str, Any], name: str) -> Any:
    if name not in presets:
        fail(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
    return presets[name]


def listing(presets: Mapping[str, Any]) -> str:
    """What `--list` prints: this entry point's presets, the environments and the training sources."""
    import gymnax

    import envs
    from envs.sources import source_names

    return "\n".join([
        f"presets (--preset): {', '.join(presets)}",
        f"environments (project names): {', '.join(envs.names())}",
        f"environments (gymnax names, also accepted): {', '.join(gymnax.registered_envs)}",
        f"meta-training sources (--set envs=...): {', '.join(source_names())}",
    ])


class _ListAction(argparse.Action):
    def __init__(self, option_strings, dest, presets=None, **kwargs):
        self.presets = presets
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(listing(self.presets))
        parser.exit()


def add_common_args(parser: argparse.ArgumentParser, presets: Mapping[str, Any], default: str,
                    config_of: Callable[[Any], Any] = lambda preset: preset, run_dir_help: str | None = None,
                    tensorboard: bool = True) -> None:
    """The flags every entry point takes; `--help` ends with the fields `--set` accepts.

    `config_of(preset)` is the frozen dataclass `--set` applies to (the preset itself by default).
    """
    parser.add_argument("--preset", default=default, choices=list(presets), help=f"named configuration (default {default})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable); the fields are listed below")
    parser.add_argument("--run-dir", default=None,
                        help=run_dir_help or "where config, metrics, checkpoints and outputs go")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over even if the run dir holds a checkpoint (or finished results)")
    if tensorboard:
        parser.add_argument("--tensorboard", action="store_true",
                            help="also write TensorBoard scalars to RUN_DIR/tensorboard (needs the [tensorboard] extra)")
    parser.add_argument("--list", action=_ListAction, presets=presets,
                        help="list presets, environments and meta-training sources, then exit")
    config = config_of(presets[default])
    lines = [f"  {name}={_format_value(value)}" for name, value in settable_fields(config)]
    epilog = (f"fields for --set (values of the {default!r} preset; tuples comma-separated, "
              f"e.g. --set {settable_fields(config)[0][0]}=...):\n" + "\n".join(lines))
    parser.epilog = f"{parser.epilog}\n\n{epilog}" if parser.epilog else epilog
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def add_device_args(parser: argparse.ArgumentParser) -> None:
    """`--devices` and `--distributed`, for the trainers that shard over devices; see `start_devices`."""
    parser.add_argument("--devices", type=int, default=None, help="number of local devices to shard over (default all)")
    parser.add_argument("--distributed", action="store_true",
                        help="join jax.distributed (multi-host); set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID")


def start_devices(args: argparse.Namespace) -> None:
    """Joins jax.distributed when `--distributed` was given (before anything touches the devices)."""
    if args.distributed:
        from lpg import sharding

        sharding.initialize_distributed()


# ------------------------------------------------------------------------------ analysis commands
def _flag_type(field: dataclasses.Field, value: Any) -> tuple[Any, str | None]:
    """(argparse type, nargs) of a settings field, from its default or its annotation."""
    text = str(field.type)
    if isinstance(value, tuple) or "tuple" in text:
        kind = type(value[0]) if value else (float if "float" in text else int if "int" in text else str)
        return kind, "+"
    if isinstance(value, bool):
        return _true_or_false, None
    if value is not None:
        return type(value), None
    return (int if "int" in text else float if "float" in text else str), None


def _true_or_false(text: str) -> bool:
    """argparse type of a boolean settings flag (`--untrained false`)."""
    try:
        return _coerce(text, True, "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def add_settings_args(parser: argparse.ArgumentParser, presets: Mapping[str, Any], default: str,
                      helps: Mapping[str, str], run_dir_help: str) -> None:
    """The common flags for a command whose settings are a frozen dataclass (evaluate, analyse_y),
    plus one flag per field (`--num-envs 32` is `--set num_envs=32`), and `--out`."""
    add_common_args(parser, presets, default, run_dir_help=run_dir_help, tensorboard=False)
    parser.add_argument("--out", default=None,
                        help="write the outputs here instead, anywhere (committed results/ only this way)")
    config = presets[default]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kind, nargs = _flag_type(f, value)
        shown = "derived, see above" if value is None else _format_value(value)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, nargs=nargs, default=None,
                            help=f"{helps.get(f.name, '')} (default: {shown})".strip())


def settings_from_args(args: argparse.Namespace, presets: Mapping[str, Any]) -> Any:
    """The preset, then `--set`, then the per-field flags given on the command line. The result
    is `args.settings`, and each field is also `args.<field>` (tuples as lists)."""
    try:
        settings = apply_overrides(pick_preset(presets, args.preset), args.set)
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(settings)
                 if getattr(args, f.name, None) is not None}
        settings = dataclasses.replace(settings, **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    except ValueError as e:
        fail(str(e))
    args.settings = settings
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        setattr(args, f.name, list(value) if isinstance(value, tuple) else value)
    return settings


def output_dir(args: argparse.Namespace, default: Path, results_dir: Path) -> Path:
    """`--out` (anywhere), else `--run-dir` or `default`, which must not lie under committed results/."""
    if args.out and args.run_dir:
        fail("give --out or --run-dir, not both")
    if args.out:
        return Path(args.out)
    out = Path(args.run_dir) if args.run_dir else default
    if out.resolve().is_relative_to(results_dir.resolve()):
        fail(f"{out} lies under {results_dir}, which holds committed results: pass --out {out} to write there")
    return out


def check_rule_and_envs(rule: str, env_names: list[str]) -> None:
    """Usage errors for a missing rule file or an unknown environment name."""
    if not Path(rule).exists():
        fail(f"--rule {rule}: no such file (meta-training writes RUN_DIR/rule.msgpack)")
    for name in env_names:
        try:
            check_env_name(name)
        except ValueError as e:
            fail(str(e))
