"""Config loading for the entry points: `file.py[:preset]` plus `--config.a.b=value` overrides.

A config file defines `get_config(arg: str | None) -> ml_collections.ConfigDict` (big_vision
style); the text after the last ':' of the spec is passed as `arg`. Overrides are parsed with the
type of the value they replace, so `--config.train.lr=1e-3` yields a float and
`--config.model.widths=64,64` a tuple. The returned config is locked: assigning a key that does
not exist (a typo) raises, in code as on the command line.

ml_collections' own override parsing lives inside its absl flag classes (`config_flags`), so
it is reimplemented here in a few lines rather than requiring absl flags.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

__all__ = ["ConfigError", "apply_overrides", "load_config"]

_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


class ConfigError(ValueError):
    """A config file, preset or override is invalid; the message is one line."""


def _one_line(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _split_spec(spec: str) -> tuple[Path, str | None]:
    path = Path(spec)
    if path.is_file():
        return path, None
    file_part, sep, preset = spec.rpartition(":")
    if sep and file_part and Path(file_part).is_file():
        return Path(file_part), preset or None
    missing = file_part if sep and file_part.endswith(".py") else spec
    raise ConfigError(f"config file not found: {missing}")


def _load_module(path: Path) -> Any:
    resolved = path.resolve()
    # Unique per path so two configs with the same file name do not clash.
    name = f"_jepa_config_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"cannot load config file {path} (not a Python file?)")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(
            f"error executing config file {path}: {_one_line(f'{type(exc).__name__}: {exc}')}"
        ) from exc
    return module


def _call_get_config(path: Path, module: Any, preset: str | None) -> ml_collections.ConfigDict:
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"config file {path} does not define get_config(arg)")
    try:
        takes_arg = bool(inspect.signature(get_config).parameters)
    except (TypeError, ValueError):
        takes_arg = True
    if not takes_arg and preset is not None:
        raise ConfigError(f"get_config() in {path} takes no preset, but {preset!r} was given")
    try:
        config = get_config(preset) if takes_arg else get_config()
    except Exception as exc:
        raise ConfigError(
            f"get_config({preset!r}) in {path} failed: {_one_line(f'{type(exc).__name__}: {exc}')}"
        ) from exc
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"get_config() in {path} returned {type(config).__name__}, expected a ConfigDict"
        )
    return config


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads `path/to/file.py` or `path/to/file.py:preset`, applies `overrides`, locks it.

    Args:
        spec: config file path, optionally followed by `:preset` (passed to `get_config`).
        overrides: command-line style strings, `--config.a.b=value` / `config.a.b=value`, or
            `--config.a.b value` as two items (e.g. the unknown args of argparse).

    Raises:
        ConfigError: missing file/get_config, failing get_config, unknown key, bad value.
    """
    path, preset = _split_spec(spec)
    config = _call_get_config(path, _load_module(path), preset)
    config.lock()
    apply_overrides(config, overrides)
    return config


# -------------------------------------------------------------------------------- overrides


def _parse_args(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """[(dotted key without 'config.', value text or None for a bare boolean flag)]."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        body = arg[2:] if arg.startswith("--") else arg
        if not body.startswith("config."):
            raise ConfigError(f"unrecognized argument {arg!r} (expected --config.KEY=VALUE)")
        key, eq, value = body[len("config.") :].partition("=")
        if not key:
            raise ConfigError(f"missing config key in {arg!r}")
        if eq:
            pairs.append((key, value))
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            i += 1
            pairs.append((key, args[i]))
        else:
            pairs.append((key, None))
        i += 1
    return pairs


def _locate(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    """(section holding the last field of `key`, that field's name); unknown keys raise."""
    parts = key.split(".")
    node, walked = config, "config"
    for part in parts:
        if not isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"cannot set config.{key}: {walked} is a value, not a section")
        if part not in node:
            valid = ", ".join(sorted(node.keys())) or "none"
            raise ConfigError(f"unknown config key config.{key} (valid keys of {walked}: {valid})")
        parent, node, walked = node, node[part], f"{walked}.{part}"
    return parent, parts[-1]


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _convert(text: str, kind: type, current: Any) -> Any:
    """`text` as a `kind` value; raises ValueError when it does not parse as one."""
    stripped = text.strip()
    if kind is bool:
        lowered = stripped.lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError
    if kind is int:
        try:
            return int(stripped)
        except ValueError:
            number = float(stripped)  # allows 1e6
            if not number.is_integer():
                raise ValueError from None
            return int(number)
    if kind is float:
        return float(stripped)
    if kind is str:
        if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in "'\"":
            return stripped[1:-1]
        return text
    if kind in (tuple, list):
        value = _literal(stripped)
        if isinstance(value, str):  # e.g. a,b without quotes
            value = [p.strip() for p in stripped.strip("()[]").split(",") if p.strip()]
        if not isinstance(value, (tuple, list)):
            value = [value]
        # Coerce elements to the type of the existing ones (e.g. floats from "1,2").
        element_types = {type(v) for v in current or ()}
        if len(element_types) == 1:
            (element_type,) = element_types
            if element_type in (bool, int, float, str):
                value = [
                    v if isinstance(v, element_type) else _convert(str(v), element_type, None)
                    for v in value
                ]
        return kind(value)
    return _literal(stripped)


def _type_name(kind: type) -> str:
    return getattr(kind, "__name__", str(kind))


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies `--config.a.b=value` overrides in place (see `load_config`); returns `config`."""
    for key, text in _parse_args(overrides):
        section, field = _locate(config, key)
        current = section[field]
        if isinstance(current, ml_collections.ConfigDict):
            example = next(iter(current.keys()), "KEY")
            raise ConfigError(
                f"config.{key} is a section; set its fields (e.g. --config.{key}.{example}=...)"
            )
        kind = section.get_type(field)
        if text is None:
            if kind is not bool:
                raise ConfigError(f"missing value for config.{key} (use --config.{key}=VALUE)")
            text = "true"
        if current is None and text.strip() in ("None", "none", "null"):
            value = None
        elif kind is type(None):  # None default without a typed placeholder: best effort
            value = _literal(text.strip())
        else:
            try:
                value = _convert(text, kind, current)
            except ValueError:
                raise ConfigError(
                    f"invalid value for config.{key}: {text!r} is not a {_type_name(kind)}"
                ) from None
        try:
            section[field] = value
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"invalid value for config.{key}: {text!r} ({_one_line(exc)})"
            ) from None
    return config


def with_defaults(cfg: Mapping[str, Any] | Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by the keys of ``cfg`` (a ConfigDict, a mapping or None) that it
    has; other keys of ``cfg`` are ignored (a section may hold settings for other parts)."""
    if cfg is None:
        values = {}
    elif hasattr(cfg, "to_dict"):
        values = dict(cfg.to_dict())
    else:
        values = dict(cfg)
    return {**defaults, **{k: v for k, v in values.items() if k in defaults}}
