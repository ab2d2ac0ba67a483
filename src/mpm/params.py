"""Read params.yaml, the single source of configuration, and validate values by name."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from mpm.errors import InputError


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(params, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return params


def get(params: dict, dotted: str) -> Any:
    """`get(p, "convert.jetclass.max_constituents")`, with an error naming a missing key."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"params: missing parameter '{dotted}'")
        node = node[part]
    return node


def positive_int(value: Any, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"params: '{name}' must be a positive integer, got {value!r}")
    return value


def non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"params: '{name}' must be a non-negative integer, got {value!r}")
    return value


def positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"params: '{name}' must be a positive number, got {value!r}")
    return float(value)


def non_negative_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError(f"params: '{name}' must be a non-negative number, got {value!r}")
    return float(value)


def fraction(value: Any, name: str, closed_upper: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (0 <= value <= 1 if closed_upper else 0 <= value < 1)
    if not ok:
        bound = "[0, 1]" if closed_upper else "[0, 1)"
        raise InputError(f"params: '{name}' must be a number in {bound}, got {value!r}")
    return float(value)


def one_of(value: Any, name: str, choices: Iterable) -> Any:
    choices = list(choices)
    if value not in choices:
        raise InputError(f"params: '{name}' must be one of {choices}, got {value!r}")
    return value
