"""Settings fields as flags and files: field declaration with help text, type conversion of
values from YAML or the command line, config-file loading, and the command that reproduces a
settings object. The settings themselves are in ``settings``."""
from __future__ import annotations

import os
from dataclasses import MISSING, asdict, field, fields
from pathlib import Path

from ross_ood.validate import split_list

__all__ = ["opt", "field_kind", "convert_value", "load_config_file", "command_line", "FieldSettings"]


def opt(default, help: str, **meta):
    """A settings field with its help text (and ``short`` flag, ``choices``)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def field_kind(f) -> tuple[str, bool]:
    """('int' | 'float' | 'str' | 'bool' | 'list[str]' | ..., optional?) of a settings field."""
    t = str(f.type).replace(" ", "")
    return t.replace("|None", ""), "|None" in t


def convert_value(key: str, value, kind: str, optional: bool):
    """Type-check / convert a value from a config file or a flag to the field's kind."""
    if value is None and optional:
        return None
    bad = ValueError(f"setting {key!r} must be {kind.replace('list[', 'a list of ').rstrip(']')}, got {value!r}")
    if kind.startswith("list["):
        item = kind[5:-1]
        items = split_list(value) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or isinstance(value, bool):
            raise bad
        return [convert_value(key, v, item, False) for v in items]
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(value, bool):
        raise bad
    if kind == "str":
        if not isinstance(value, (str, int, float)):
            raise bad
        return str(value)
    try:
        v = float(value) if kind == "float" else int(value) if isinstance(value, str) else value
    except (ValueError, TypeError):
        raise bad from None
    if kind == "int" and (not isinstance(v, int) or isinstance(v, bool)):
        raise bad
    if kind == "float" and not isinstance(v, (int, float)):
        raise bad
    return float(v) if kind == "float" else v


def command_line(command: str, st) -> str:
    """The ``ross`` command that sets every non-default setting of ``st`` as a flag."""
    import shlex
    parts = ["ross", command]
    for f in fields(st):
        default = f.default_factory() if f.default is MISSING else f.default
        v = getattr(st, f.name)
        if v == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else f"--no-{f.name.replace('_', '-')}")
        else:
            parts += [flag, ",".join(map(str, v)) if isinstance(v, list) else str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def load_config_file(path: str | os.PathLike, cls: type) -> dict:
    """The settings in a YAML file, type-checked against ``cls``'s fields (not validated)."""
    import yaml
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {p} is not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"config file {p} must hold a mapping of settings, got {type(doc).__name__}")
    known = {f.name: f for f in fields(cls)}
    out = {}
    for k, v in doc.items():
        key = str(k).replace("-", "_")
        if key not in known:
            raise ValueError(f"unknown config key {k!r} in {p}; known keys: {', '.join(sorted(known))}")
        out[key] = convert_value(key, v, *field_kind(known[key]))
    return out


class FieldSettings:
    """Base of the settings dataclasses: every field is converted to its declared kind on
    construction (``convert_value``), then ``validate`` runs."""

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name, convert_value(f.name, getattr(self, f.name), *field_kind(f)))
        self.validate()

    def validate(self) -> None:
        """Refuse bad values (subclasses)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def defaults(cls) -> dict:
        """Every setting at its default, as ``to_dict`` writes it."""
        return {f.name: f.default_factory() if f.default is MISSING else f.default for f in fields(cls)}
