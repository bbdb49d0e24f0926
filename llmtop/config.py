"""llmtop's config file: alert thresholds (flags override the file, the file overrides defaults).

~/.config/llmtop/config.toml (or $LLMTOP_CONFIG, or $XDG_CONFIG_HOME/llmtop/config.toml):

    [alerts]
    vram_percent = 85          # warn above this share of VRAM used
    vram_headroom_percent = 10 # critical below this share free
    temp_margin_c = 5          # warn within this many °C of the slowdown threshold
    throttle_s = 5             # a thermal/power-brake reason must last this long
    cpu_fallback_s = 10
    thermal_window_s = 300     # the thermal verdict's window
    persistence_hint = true
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from llmtop.diagnosis.thresholds import Thresholds

# flag → Thresholds field
_FLAGS: dict[str, str] = {
    "--vram-alert-percent": "vram_percent",
    "--vram-headroom-percent": "vram_headroom_percent",
    "--temp-margin-c": "temp_margin_c",
    "--throttle-alert-s": "throttle_s",
    "--thermal-window-s": "thermal_window_s",
}


class ConfigError(ValueError):
    """The config file exists but cannot be used (the message names the file and the key)."""


def config_path() -> Path:
    env = os.environ.get("LLMTOP_CONFIG")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "llmtop" / "config.toml"


def load_thresholds(path: Path | None = None) -> Thresholds:
    """Thresholds from the config file's [alerts] table (defaults when there is no file)."""
    path = path or config_path()
    if not path.is_file():
        return Thresholds()
    import tomllib  # only when there is a file: keeps it off the dashboard's first frame

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    table = data.get("alerts", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [alerts] must be a table")
    return _apply(Thresholds(), table, str(path))


def _apply(base: Thresholds, values: dict[str, Any], where: str) -> Thresholds:
    fields = {f.name: f for f in dataclasses.fields(Thresholds)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        f = fields.get(key)
        if f is None:
            raise ConfigError(
                f"{where}: unknown alert setting {key!r} (known: {', '.join(fields)})"
            )
        default = getattr(base, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be true or false")
        elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: {key} must be a number ≥ 0")
        changes[key] = value if isinstance(default, bool) else float(value)
    return dataclasses.replace(base, **changes)


_HELP: dict[str, tuple[str, str]] = {
    "vram_percent": ("PERCENT", "warn when a GPU's VRAM use is above this share"),
    "vram_headroom_percent": ("PERCENT", "critical when less than this share of VRAM is free"),
    "temp_margin_c": ("DEG_C", "warn within this many °C of the GPU's slowdown temperature"),
    "throttle_s": ("SECONDS", "a thermal/power clock brake must last this long to alert"),
    "thermal_window_s": ("SECONDS", "the thermal verdict's window"),
}


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that override the config file's alert thresholds."""
    g = parser.add_argument_group("alert thresholds (override ~/.config/llmtop/config.toml)")
    g.add_argument("--config", type=Path, default=None, help="config file (TOML)")
    defaults = Thresholds()
    for flag, name in _FLAGS.items():
        metavar, words = _HELP[name]
        g.add_argument(
            flag,
            dest=name,
            type=float,
            default=None,
            metavar=metavar,
            help=f"{words} ({getattr(defaults, name):g})",
        )


def thresholds_from_args(args: argparse.Namespace) -> Thresholds:
    """Config file (args.config or the default path), then the flags given on the command line."""
    base = load_thresholds(getattr(args, "config", None))
    given = {
        name: getattr(args, name)
        for name in _FLAGS.values()
        if getattr(args, name, None) is not None
    }
    return _apply(base, given, "command line") if given else base
