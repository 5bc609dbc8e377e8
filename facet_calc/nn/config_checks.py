"""Checks of a potential's config values before anything is allocated.

A config is data from a file: even one whose sha256 matches its index may have been written
(and re-signed) by anyone. Every value that sizes an allocation or enters the physics is
checked for type, range and consistency here, with a message that names the field, so a bad
file raises one ``ConfigError`` instead of a raw exception, a huge allocation or a silently
wrong energy. Each family's ``check_config`` calls these.
"""

from __future__ import annotations

import math
from typing import Any

#: bounds that no real potential comes near, so that a corrupt value cannot drive a huge
#: allocation (the largest shipped values: 260 intervals, 3,136 weights per edge, 128 channels)
MAX_INTERVALS = 100_000
MAX_WEIGHTS_PER_EDGE = 1_000_000
MAX_WIDTH = 100_000
MAX_LAYERS = 64
MAX_CUTOFF = 30.0  # A


class ConfigError(ValueError):
    """A potential config value that cannot be right; the message names the field."""


def field(config: dict[str, Any], name: str, where: str = "config") -> Any:
    if not isinstance(config, dict):
        raise ConfigError(f"{where} must be a JSON object (a dict), got {type(config).__name__}")
    if name not in config:
        raise ConfigError(f"{where} has no {name!r}")
    return config[name]


def integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def positive(value: Any, name: str, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= high):
        raise ConfigError(f"{name} must be a positive finite number (at most {high:g}), got {value!r}")
    return float(value)


def irreps(value: Any, name: str, max_dim: int = MAX_WIDTH):
    """``value`` parsed as e3nn irreps of dimension at most ``max_dim``."""
    from e3nn import o3

    try:
        parsed = o3.Irreps(value)
    except Exception as err:  # e3nn raises several types for a bad string
        raise ConfigError(f"{name} is not an irreps string: {value!r} ({err})") from None
    if not 0 < parsed.dim <= max_dim:
        raise ConfigError(f"{name} has dimension {parsed.dim}, outside (0, {max_dim}]")
    return parsed


def heads(config: dict[str, Any]) -> list[str]:
    """A multi-head config's ``heads`` (a list of names, possibly empty) and its ``default_head``."""
    names = config.get("heads", [])
    if not isinstance(names, list) or not all(isinstance(h, str) for h in names):
        raise ConfigError(f"heads must be a list of names, got {names!r:.80}")
    if names and config.get("default_head") not in names:
        raise ConfigError(f"default_head {config.get('default_head')!r} is not one of the heads {names}")
    return names


def layer_specs(config: dict[str, Any]) -> list:
    """The config's ``layers``: a list of 1 to ``MAX_LAYERS`` layer specs."""
    layers = field(config, "layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        raise ConfigError(f"layers must be a list of 1 to {MAX_LAYERS} layer specs")
    return layers


def common(config: dict[str, Any]) -> None:
    """What every family's config has: cutoff, elements, and a radial grid consistent with
    the cutoff."""
    cutoff = positive(field(config, "cutoff"), "cutoff (A)", MAX_CUTOFF)
    numbers = field(config, "atomic_numbers")
    if not isinstance(numbers, list) or not numbers or len(numbers) > 118:
        raise ConfigError(f"atomic_numbers must be a list of 1 to 118 elements, got {numbers!r:.80}")
    for z in numbers:
        integer(z, "each atomic number", 1, 118)
    if len(set(numbers)) != len(numbers):
        raise ConfigError("atomic_numbers has duplicates")
    radial = field(config, "radial")
    integer(field(radial, "n_intervals", "radial"), "radial.n_intervals", 2, MAX_INTERVALS)
    r_max = positive(field(radial, "r_max", "radial"), "radial.r_max")
    if abs(r_max - cutoff) > 1e-9 * cutoff:
        raise ConfigError(f"radial.r_max ({r_max}) must equal the cutoff ({cutoff}): the tables end there")
