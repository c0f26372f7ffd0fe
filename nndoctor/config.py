"""nndoctor.yaml (SPEC §2): read, validated key by key; the command line wins."""

from __future__ import annotations

import os
from typing import Any, Optional

from .errors import ConfigError

DEFAULT_FILE = "nndoctor.yaml"
BUDGETS = ("max_params", "max_mb", "max_flops")  # size's budgets: 2e9, or "1.5G"
TOP_LEVEL: dict[str, Any] = {
    "target": str, "data": str, "fail_on": str, "seed": int, "device": str,
    "max_seconds": (int, float), "only": (list, str), "skip": (list, str),
    "budget": (int, float),  # --budget (SPEC §10): seconds for the whole `check`
}


def find_config(path: Optional[str]) -> Optional[str]:
    """`--config F`, else `nndoctor.yaml` in the working folder if present."""
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"config file not found: {path}")
        return path
    return DEFAULT_FILE if os.path.isfile(DEFAULT_FILE) else None


def load_config(path: Optional[str]) -> dict:
    """The validated config as {"target": ..., ..., "checks": {name: {setting: value}}}."""
    path = find_config(path)
    if path is None:
        return {"checks": {}}
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML in {where}: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return validate(raw, path)


def validate(raw, path: str = DEFAULT_FILE) -> dict:
    from . import checks as registry

    if raw is None:
        return {"checks": {}}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys, not a {type(raw).__name__}")
    config: dict = {"checks": {}}
    for key, value in raw.items():
        name: Optional[str] = str(key).replace("_", "-") if str(key).replace("_", "-") in registry.CHECKS else str(key)
        # `data` is both the --data factory (a string) and the data check's section (a mapping).
        if key == "data" and value is not None and not isinstance(value, dict):
            name = None
        if name in registry.CHECKS:
            config["checks"][name] = _check_section(registry, name, value, path)
        elif key in TOP_LEVEL:
            if not isinstance(value, TOP_LEVEL[key]) or isinstance(value, bool):
                raise ConfigError(f"{path}: {key!r} must be {_type_name(TOP_LEVEL[key])}, "
                                  f"not {value!r}")
            config[key] = value
        else:
            known = sorted(TOP_LEVEL) + sorted(registry.CHECKS)
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {', '.join(known)})")
    return config


def _check_section(registry, name: str, value, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {name!r} must be a mapping of settings, not {value!r}")
    allowed = registry.defaults(name)
    for key, setting in value.items():
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key {name}.{key} "
                              f"(known for {name}: {', '.join(sorted(allowed)) or 'none'})")
        expected = _setting_type(allowed[key])
        if expected and setting is not None and not _is_instance(setting, expected):
            raise ConfigError(f"{path}: {name}.{key} must be {_type_name(expected)}, not {setting!r}")
        if key in BUDGETS:
            try:
                parse_budget(setting, key)
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    return dict(value)


def _setting_type(default):
    """The types a setting accepts, judged from its default (None: anything)."""
    if default is None:
        return None
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        # Any number: an int default may be a percentage (dead.threshold: 47.5); a
        # check needing a count converts it. Strings, booleans and lists are the mistakes.
        return (int, float)
    if isinstance(default, (list, tuple)):
        return (list, str)  # a shape as [1, 3, 224, 224] or "1,3,224,224"
    return type(default)


def _is_instance(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # YAML's `yes`/`true` is not a number
    return isinstance(value, types)


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    if float in types:  # an integer is a number too
        types = tuple(t for t in types if t is not int)
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", bool: "true or false"}
    return " or ".join(names.get(t, t.__name__) for t in types)


_SUFFIXES = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def parse_budget(value: Any, key: str) -> Optional[float]:
    """A budget as a number: 2000000, 2e9, or "1.5G" / "500M" (YAML reads `2e9` as a string)."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = str(value).strip().upper()
    scale = _SUFFIXES.get(text[-1:], 1.0)
    try:
        return float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise ValueError(f"size.{key} must be a number such as 2e9 or 1.5G, not {value!r}") from None
