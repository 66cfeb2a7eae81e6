"""The checks of a profile file's sections: each raises one :class:`ProfileError` that names the problem and the
fix (an unknown method lists the valid ones, a setting of the wrong kind says which kind)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from lib25d.models import METHODS

LABEL = re.compile(r"^[A-Za-z0-9_]+$")


class ProfileError(ValueError):
    """A profile file that cannot describe a study; the message names the fix."""


def methods(values: Any, key: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise ProfileError(f"{key} must be a non-empty list of methods from {', '.join(METHODS)}")
    unknown = [m for m in values if m not in METHODS]
    if unknown:
        raise ProfileError(f"{key} names unknown method(s) {', '.join(map(str, unknown))}; valid: {', '.join(METHODS)}")
    return [str(m) for m in values]


def mapping(value: Any, what: str, example: str) -> dict[str, Any]:
    """A profile section that must be a mapping (empty when absent)."""
    if value is not None and not isinstance(value, Mapping):
        raise ProfileError(
            f"{what} must be a mapping of settings, e.g. {example}; got {type(value).__name__} {value!r}"
        )
    return dict(value or {})


def known(names: Iterable[str], valid: Iterable[str], what: str) -> None:
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise ProfileError(what.format(", ".join(unknown)) + f"; valid: {', '.join(valid)}")


BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def scalar(values: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    """An int or bool setting; strings and 0/1 as command-line overrides give them are accepted."""
    value = values.get(key, default)
    text = str(value).strip().lower()
    if kind is bool and text in BOOLS:
        return BOOLS[text]
    if kind is int and not isinstance(value, (bool, float)) and text.isdigit():
        return int(text)
    raise ProfileError(f"{key} must be {'a whole number' if kind is int else 'true or false'}, got {value!r}")


def datasets(values: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(values, Mapping) or not values:
        raise ProfileError("datasets must map dataset labels to settings, e.g. {adrenal: {}, synthetic: {size: 16}}")
    out = {}
    for label, settings in values.items():
        if not LABEL.match(str(label)):
            raise ProfileError(
                f"dataset label {label!r} may hold only letters, digits and _; "
                "set the real name with `dataset:` (e.g. myct: {dataset: 'nifti:scans.csv'})"
            )
        out[str(label)] = mapping(settings, f"datasets.{label}", "{size: 16, epochs: 2}")
    return out
