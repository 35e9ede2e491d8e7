"""Typed dataclass fields from plain data, and each field's documentation: the plumbing under :mod:`livecue.config`.

* :func:`from_dict` builds a (nested) dataclass from a mapping, coercing every value to its field's annotation
  (``"1e-4"`` → 0.0001 for a float, ``3.0`` → 3 for an int) and naming the dotted key of anything it refuses.
* :func:`split_override` and :func:`set_dotted` apply ``section.key=value`` overrides to plain data.
* :func:`field_docs` reads the docstring written under each field (an attribute docstring, as IDEs and Sphinx show
  it); :func:`describe` turns a config class into its sections and fields, which :func:`render_text`
  (``livecue config --fields``) and :func:`render_markdown` (``docs/config.md``) print, wrapped by :func:`fill`.

It knows nothing about what the fields mean, and imports only the standard library and PyYAML.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml


# ---- values --------------------------------------------------------------------------------------------------------
def from_dict(cls: type, data: Any, where: str = "", ignore: frozenset[str] = frozenset()) -> Any:
    """Build the dataclass ``cls`` from ``data`` (a mapping, nested for nested dataclasses).

    Args:
        cls: the dataclass to build.
        data: its fields as plain data (an instance of ``cls`` is returned as is).
        where: the dotted prefix of ``cls`` in the whole config (``"train."``), for error messages.
        ignore: dotted keys that are accepted and dropped (keys older versions wrote and nothing reads now).

    Raises:
        ValueError: naming the dotted key of an unknown field or of a value that does not fit its annotation.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'!r} must be a mapping, got {data!r}")
    data = {k: v for k, v in data.items() if f"{where}{k}" not in ignore}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(repr(f'{where}{k}') for k in unknown)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}", ignore) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, ignore: frozenset[str]) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where + ".", ignore)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where, ignore)
    if tp is Any or value is None and tp is type(None):
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {where!r} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(inner, v, where, ignore) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {where!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:  # a command line's yes/no/on/off
            return _BOOL_WORDS[value.strip().lower()]
        raise ValueError(f"config key {where!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"config key {where!r} must be an integer, got {value!r}")
    if tp is float:
        return _float(value, where)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            raise ValueError(f"config key {where!r} must be a string, got {value!r} (YAML reads yes/no/on/off as "
                             f"booleans: quote the value, e.g. \"no\")")
        raise ValueError(f"config key {where!r} must be a string, got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 and 1.0e9 (no exponent sign) as strings
        try:
            value = float(value.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"config key {where!r} must be a number, got {value!r}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"config key {where!r} must be a finite number, got {value!r}")
        return number
    raise ValueError(f"config key {where!r} must be a number, got {value!r}")


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def split_override(text: str) -> tuple[str, Any]:
    """``"--stream.threshold=0.8"`` → ``("stream.threshold", 0.8)``: the value is read as YAML (``3e-3`` too)."""
    text = text[2:] if text.startswith("--") else text
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        value = raw.strip()  # "no", "on", ...: a string for a string field (a bool field reads the word too)
    if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip(), value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; unknown keys are reported by :func:`from_dict` afterwards."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {key!r}: {'.'.join(parts[:i + 1])!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def merge(into: dict[str, Any], update: dict[str, Any], atomic: frozenset[str] = frozenset()) -> None:
    """Merge ``update`` into ``into`` section by section; a mapping under a key in ``atomic`` replaces the old one."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key not in atomic:
            merge(into[key], value, atomic)
        else:
            into[key] = value


# ---- documentation -------------------------------------------------------------------------------------------------
@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}``: the string literal written right under each field of the dataclass ``cls``.

    Empty when the source is not available (a frozen application): the reference then shows no help.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


@dataclass
class FieldDoc:
    """One config field as the reference shows it."""

    key: str      # dotted: "train.learning_rate"
    type: str     # the annotation as written: "float | None"
    default: str  # JSON: "0.0002", "null", "\"cosine\""
    help: str     # the field's docstring ("" when it has none)


@dataclass
class SectionDoc:
    """One section of a config (a nested dataclass), or its top-level fields (``name`` "")."""

    name: str
    summary: str  # the first line of the section class's docstring
    details: str  # the rest of it
    fields: list[FieldDoc]


def describe(root: type) -> list[SectionDoc]:
    """The sections of the config class ``root``: its own plain fields first (section ""), then one section per
    field whose type is a dataclass, each with its fields in declaration order."""
    hints = typing.get_type_hints(root)
    plain = [f for f in dataclasses.fields(root) if not dataclasses.is_dataclass(hints[f.name])]
    sections = [_section("", root, plain)]
    for f in dataclasses.fields(root):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            sections.append(_section(f.name, tp, dataclasses.fields(tp)))
    return sections


def _section(name: str, cls: type, fields: typing.Iterable[dataclasses.Field]) -> SectionDoc:
    docs = field_docs(cls)
    summary, _, details = inspect.cleandoc(cls.__doc__ or "").partition("\n")
    prefix = f"{name}." if name else ""
    return SectionDoc(name, summary.strip(), details.strip(), [
        FieldDoc(prefix + f.name, str(f.type), _default(f), docs.get(f.name, "")) for f in fields])


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value, ensure_ascii=False)


def fill(text: str, width: int, indent: str = "", first: str | None = None) -> str:
    """``text`` on one paragraph, wrapped at spaces to ``width`` columns; reST's ````code```` becomes `code`."""
    text = " ".join(text.replace("``", "`").split())
    return textwrap.fill(text, width, initial_indent=indent if first is None else first, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def _paragraphs(text: str, width: int, indent: str = "") -> str:
    """Re-flow ``text`` (blank-line separated paragraphs) to ``width`` columns."""
    return "\n\n".join(fill(p, width, indent) for p in text.split("\n\n") if p.strip())


def render_text(sections: list[SectionDoc], width: int = 100) -> str:
    """The fields of ``sections`` for a terminal: ``key: type = default`` and the help, indented."""
    lines = []
    for section in sections:
        lines.append(fill(f"[{section.name or 'top level'}] {section.summary}", width))
        for f in section.fields:
            lines.append(f"  {f.key}: {f.type} = {f.default}")
            lines.append(_paragraphs(f.help or "(no help)", width, indent="      "))
        lines.append("")
    return "\n".join(lines)


def render_markdown(sections: list[SectionDoc], title: str, intro: str, width: int = 120) -> str:
    """The fields of ``sections`` as a Markdown reference: one heading per section, one list item per field."""
    out = [f"# {title}", "", _paragraphs(intro, width), ""]
    for section in sections:
        summary = section.summary.replace("``", "`").rstrip(".")
        out += [f"## `{section.name}`: {summary}" if section.name else f"## Top level: {summary}", ""]
        if section.details:
            out += [_paragraphs(section.details, width), ""]
        for f in section.fields:
            item = f"- **`{f.key}`** (`{f.type}`, default `{f.default}`): {f.help or '(no help)'}"
            out.append(fill(item, width, indent="  ", first=""))
        out.append("")
    return "\n".join(out)
