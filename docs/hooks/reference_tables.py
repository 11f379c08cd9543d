"""Reference tables generated from the code: configuration keys, study keys, search-space types, the zoo.

Descriptions come from the code's own documentation: a dataclass's ``Attributes:`` docstring
section (parsed with griffe, which mkdocstrings uses too) and the study loader's
``STUDY_KEYS``.  A key without a description is a warning, so ``mkdocs build --strict`` fails
until the code documents it.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from griffe import Docstring

from tables import log, markdown_table


def _descriptions(cls: type, where: str) -> dict[str, str]:
    """``{attribute: description}`` from the ``Attributes:`` section of ``cls``'s docstring."""
    found: dict[str, str] = {}
    for section in Docstring(cls.__doc__ or "", parser="google").parse():
        if section.kind.value == "attributes":
            found.update({item.name: " ".join(item.description.split()) for item in section.value})
    for name in (field.name for field in dataclasses.fields(cls)):
        if name not in found:
            log.warning(f"{where}: {cls.__name__}.{name} has no description in its docstring's Attributes section")
    return found


def _type_text(hint: Any) -> str:
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        names = [f"`{argument}`" for argument in arguments]
        return "one of " + ", ".join(names)
    if type(None) in arguments:
        rest = [argument for argument in arguments if argument is not type(None)]
        return f"{_type_text(rest[0])} or unset" if len(rest) == 1 else "any"
    if origin is tuple:
        return f"list of {_type_text(arguments[0])}"
    return getattr(hint, "__name__", str(hint))


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        if field.default is None:
            return "unset"
        value = list(field.default) if isinstance(field.default, tuple) else field.default
        return f"`{value!r}`".replace("'", "")
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        return "(section)" if dataclasses.is_dataclass(value) else f"`{value!r}`"
    return "required"


def _key_table(cls: type, prefix: str, where: str, searchable: bool = True) -> str:
    from splitsearch.search.space import KEY_TYPES

    descriptions = _descriptions(cls, where)
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        rows.append((f"`{key}`", _type_text(hints[field.name]), _default_text(field),
                     *(["yes" if key in KEY_TYPES else ""] if searchable else []), descriptions.get(field.name, "")))
    return markdown_table(("key", "type", "default", *(["searchable"] if searchable else []), "meaning"), rows)


def config_keys(where: str) -> str:
    """The keys of a split configuration (:class:`splitsearch.config.SplitConfig`)."""
    from splitsearch.config import SplitConfig

    return _key_table(SplitConfig, "", where)


def train_keys(where: str) -> str:
    """The keys of a configuration's ``train`` section (:class:`splitsearch.config.TrainConfig`)."""
    from splitsearch.config import TrainConfig

    return _key_table(TrainConfig, "train.", where)


def study_keys(where: str) -> str:
    """The keys a study file may hold, as the study loader knows them."""
    from splitsearch.search import study

    known = getattr(study, "STUDY_KEYS", None)
    if not isinstance(known, dict):
        log.warning(f"{where}: splitsearch.search.study has no STUDY_KEYS mapping of key to meaning")
        return ""
    return markdown_table(("key", "meaning"), ((f"`{key}`", " ".join(text.split())) for key, text in known.items()))


def greedy_keys(where: str) -> str:
    """The keys of a study file's ``greedy:`` section (:class:`splitsearch.search.strategies.GreedySettings`)."""
    from splitsearch.search.strategies import GreedySettings

    return _key_table(GreedySettings, "greedy.", where, searchable=False)


def worker_keys(where: str) -> str:
    """The keys of a study file's ``worker:`` section: the loader's WORKER_SETTINGS, described by ExecutionOptions."""
    from splitsearch.search.execution import WORKER_SETTINGS, ExecutionOptions

    descriptions = {}
    for section in Docstring(ExecutionOptions.__doc__ or "", parser="google").parse():
        if section.kind.value == "attributes":
            for item in section.value:  # "data_dir, download: ..." documents two fields at once
                descriptions.update({name.strip(): " ".join(item.description.split()) for name in item.name.split(",")})
    rows = []
    for key, (kind, least) in WORKER_SETTINGS.items():
        if key not in descriptions:
            log.warning(f"{where}: ExecutionOptions.{key} has no description in its docstring's Attributes section")
        bound = "" if least is None else f", at least {least:g}"
        rows.append((f"`worker.{key}`", f"{_type_text(kind)}{bound}", descriptions.get(key, "")))
    return markdown_table(("key", "type", "meaning"), rows)


def space_types(where: str) -> str:
    """The distribution types of a search space's ``params`` and the fields each takes."""
    from splitsearch.search import space

    fields = getattr(space, "_FIELDS", None)
    if not isinstance(fields, dict):
        log.warning(f"{where}: splitsearch.search.space has no _FIELDS table of distribution types")
        return ""
    return markdown_table(("type", "fields"), ((f"`{kind}`", ", ".join(f"`{name}`" for name in (*names, "when")))
                                                for kind, names in fields.items()))


_GROUP = re.compile(r"\(\?P<(\w+)>([^()]*)\)")


def _pattern_text(pattern: str) -> str:
    """A family's name pattern as a reader writes it: ``wrn(?P<depth>\\d+)_(?P<k>\\d+)`` -> ``wrn{depth}_{k}``."""
    def group(match: re.Match) -> str:
        body = match.group(2)
        if body in (r"\d+", "[0-9]+"):
            return "{" + match.group(1) + "}"
        if body.isalnum():  # one literal value: wrn(?P<depth>50)_... is wrn50_...
            return body
        return "{" + body.replace("|", ",").replace("[", "").replace("]", "") + "}"

    return _GROUP.sub(group, pattern)


def zoo(where: str) -> str:
    """Every registered family: names, the splits it takes, packed execution, input size; then its width knob."""
    from splitsearch.ensemble import can_fuse
    from splitsearch.models.registry import available_families

    families = available_families()
    rows = []
    for family in families:
        splits = ", ".join(["S", *(["K_b"] if family.supports_block_split else []),
                            *(["G"] if family.supports_semantic_split else [])])
        rows.append((", ".join(f"`{name}`" for name in family.examples), f"`{_pattern_text(family.pattern)}`",
                     family.num_blocks, splits, "yes" if can_fuse(family.examples[0]) else "no",
                     family.min_input_size))
    knobs = "\n".join(f"- `{_pattern_text(family.pattern)}`: {family.width_unit}." for family in families)
    return (markdown_table(("names", "pattern", "blocks", "splits", "packed", "smallest input"), rows)
            + "\n\n### The width knob\n\nWhat one step of `width_mult` changes, family by family:\n\n" + knobs)
