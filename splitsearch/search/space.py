"""Search spaces: a YAML file saying which config keys a study searches, and over what values.

Example (``search_spaces/divide.yaml`` plus a shorter training run)::

    name: divide-short
    description: number of small networks S, weight-decay rule and co-training weight
    params:
      S: {type: categorical, choices: [1, 2, 4]}
      wd_rule: {type: categorical, choices: [none, linear, exp], when: "S > 1"}
      lambda_cot: {type: float, low: 0.0, high: 1.0, when: "S > 1"}
    fixed:
      train.epochs: 30

Keys are the split fields of :class:`~splitsearch.config.SplitConfig` (``S``, ``groups``,
``wd_rule``, ``lambda_cot``, ``width_mult``, ``block_factors``) or training fields written
``train.<field>``.  Types map onto Optuna's ``suggest_categorical`` / ``suggest_int`` /
``suggest_float``; ``per_block`` (only for ``block_factors``) suggests one categorical
``block_factors.<b>`` per block of the base architecture, or only for the blocks listed in
``blocks`` (the others stay 1).  ``when: "<key> <op> <value>"`` (ops ``== != > >= < <= in``)
searches a parameter only if the condition holds on the values sampled before it, the fixed
values or the base config; otherwise it keeps the base config's value.  Parameters are suggested
in file order, which is why a condition may only look at keys above it.

Everything is checked when the file is loaded, so a typo fails before a study starts rather
than in a worker hours later, with a one-line :class:`SpaceError` naming the file, the key and
the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import optuna
import yaml

import splitsearch
from splitsearch.config import SplitConfig, TrainConfig, as_float, is_int, read_yaml
from splitsearch.models import resolve_arch
from splitsearch.errors import SplitsearchError

SHIPPED_DIR = Path(splitsearch.__file__).resolve().parents[1] / "search_spaces"


class SpaceError(SplitsearchError, ValueError):
    """A search space is invalid (or does not fit the base network); the message says where and why."""


def _key_types() -> dict[str, Any]:
    """The type of every key a space may set: the split fields, then ``train.<field>``.

    A field that may be left unset (``int | None``: the dataset supplies it) takes its concrete
    type here: a space sets a value.
    """
    split = typing.get_type_hints(SplitConfig)
    keys = {name: hint for name, hint in split.items() if name not in ("arch", "dataset", "train")}
    keys.update({f"train.{name}": hint for name, hint in typing.get_type_hints(TrainConfig).items()})
    return {key: _without_none(hint) for key, hint in keys.items()}


def _without_none(hint: Any) -> Any:
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    return arguments[0] if type(None) in typing.get_args(hint) and len(arguments) == 1 else hint


KEY_TYPES: dict[str, Any] = _key_types()

# Fields each distribution type accepts besides ``type`` and ``when``.
_FIELDS = {
    "categorical": ("choices",),
    "int": ("low", "high", "step", "log"),
    "float": ("low", "high", "step", "log"),
    "per_block": ("choices", "blocks"),
}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda value, options: value in options,
}
_ORDERED_OPS = (">", ">=", "<", "<=")
# ``in`` must stand between spaces; the value is whatever follows the operator.
_CONDITION = re.compile(
    r"(?P<key>[A-Za-z_][\w.]*)\s*(?P<op>==|!=|>=|<=|>|<|(?<=\s)in(?=\s))\s*(?P<value>\S.*)"
)


@dataclass(frozen=True)
class Condition:
    """``<key> <op> <value>``: when a parameter is searched.  Parsed, never ``eval``-ed."""

    key: str
    op: str
    value: Any  # a value of the key's type; a tuple of them for ``in``

    def holds(self, values: Mapping[str, Any]) -> bool:
        return _OPS[self.op](values[self.key], self.value)

    def __str__(self) -> str:
        return f"{self.key} {self.op} {_text(self.value)}"


@dataclass(frozen=True)
class Param:
    """One searched key: its distribution, and the condition under which it is searched.

    ``kind`` is the YAML ``type``; ``choices`` serves ``categorical`` and ``per_block``,
    ``low``/``high``/``step``/``log`` serve ``int`` and ``float``, ``blocks`` (``None``: every
    block) serves ``per_block``.
    """

    key: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    blocks: tuple[int, ...] | None = None
    when: Condition | None = None

    def suggest(self, trial: optuna.trial.BaseTrial, num_blocks: int) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        factors = [1] * num_blocks
        for block in self._searched_blocks(num_blocks):
            factors[block] = trial.suggest_categorical(f"{self.key}.{block}", self.choices)
        return tuple(factors)

    def names(self, num_blocks: int) -> list[str]:
        """The Optuna parameter names this entry suggests: its key, or one name per searched block."""
        if self.kind != "per_block":
            return [self.key]
        return [f"{self.key}.{block}" for block in self._searched_blocks(num_blocks)]

    def _searched_blocks(self, num_blocks: int) -> tuple[int, ...]:
        return tuple(range(num_blocks)) if self.blocks is None else self.blocks

    def __str__(self) -> str:
        if self.kind in ("int", "float"):
            text = f"{self.kind} [{self.low}, {self.high}]"
            default_step = self.step is None or (self.kind == "int" and self.step == 1)
            text += "" if default_step else f" step {self.step}"
            text += " log" if self.log else ""
        else:
            text = f"{self.kind.replace('_', ' ')} {_text(self.choices)}"
            text += f" on blocks {_text(self.blocks)}" if self.blocks is not None else ""
        return text + (f"  when {self.when}" if self.when is not None else "")


@dataclass(frozen=True)
class SearchSpace:
    """A loaded, validated search space; ``params`` in suggestion order."""

    name: str
    params: tuple[Param, ...]
    fixed: Mapping[str, Any]
    source: Path | None = None
    description: str = ""


def shipped_spaces() -> list[str]:
    """Names of the spaces shipped in ``search_spaces/`` (what ``load_space`` accepts bare)."""
    return sorted(path.stem for path in SHIPPED_DIR.glob("*.yaml"))


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search space file, or a shipped space by bare name (``"divide"``).

    Raises:
        SpaceError: the file is missing, is not YAML, or describes an invalid space.
    """
    path = _resolve(path)
    data = read_yaml(path, SpaceError)
    try:
        return _parse(data, path)
    except SpaceError as error:
        raise SpaceError(f"{path}: {error}") from None


def check_compatible(space: SearchSpace, base: SplitConfig) -> None:
    """Raise :class:`SpaceError` if ``space`` cannot be searched on ``base``'s architecture.

    ``suggest_config`` calls it; call it yourself before creating a study so that the mismatch
    fails once, up front, instead of in every trial.
    """
    family, _ = resolve_arch(base.arch)
    groups = [value for param in space.params if param.key == "groups" for value in (param.choices or ())]
    if max([*groups, space.fixed.get("groups", 1)]) > 1 and not family.supports_semantic_split:
        raise SpaceError(f"{space.source}: groups: {base.arch} has no semantic split (it is implemented for the "
                         "CIFAR ResNets with basic blocks: resnet20, ..., wrn16_8, ...); search groups: [1] or "
                         "use divide.yaml / blocks.yaml")
    for param in space.params:
        if param.kind != "per_block":
            continue
        if not family.supports_block_split:
            raise SpaceError(f"{space.source}: {param.key}: {base.arch} does not support "
                             "block-wise splitting")
        if param.blocks is not None and max(param.blocks) >= family.num_blocks:
            raise SpaceError(f"{space.source}: {param.key}: blocks {list(param.blocks)} out of range, "
                             f"{base.arch} has {family.num_blocks} blocks (0 to {family.num_blocks - 1})")


def suggest_config(space: SearchSpace, trial: optuna.trial.BaseTrial, base: SplitConfig) -> SplitConfig:
    """The candidate ``trial`` samples from ``space``: ``base`` with the fixed, then the searched values.

    Raises:
        SpaceError: the space does not fit ``base``'s architecture (see :func:`check_compatible`).
        ConfigError: the sampled combination is not a valid config (e.g. more groups than classes).
    """
    check_compatible(space, base)
    num_blocks = resolve_arch(base.arch)[0].num_blocks
    current = {key: config_value(base, key) for key in KEY_TYPES} | dict(space.fixed)
    changes = dict(space.fixed)
    for param in space.params:
        if param.when is None or param.when.holds(current):
            current[param.key] = changes[param.key] = param.suggest(trial, num_blocks)
    train = {key.removeprefix("train."): value for key, value in changes.items() if key.startswith("train.")}
    split = {key: value for key, value in changes.items() if not key.startswith("train.")}
    return base.replace(**split, train=dataclasses.replace(base.train, **train))


def parameter_names(space: SearchSpace, base: SplitConfig) -> list[str]:
    """Every Optuna parameter name ``space`` can suggest on ``base``'s architecture, conditional
    ones included, in suggestion order: what ``study.enqueue_trial`` may set."""
    num_blocks = resolve_arch(base.arch)[0].num_blocks
    return [name for param in space.params for name in param.names(num_blocks)]


def config_from_params(space: SearchSpace, params: Mapping[str, Any], base: SplitConfig) -> SplitConfig:
    """Rebuild the config of a finished trial from its ``trial.params`` (for export), no study needed."""
    return suggest_config(space, optuna.trial.FixedTrial(dict(params)), base)


def space_fingerprint(space: SearchSpace) -> str:
    """Stable short hash of what the space searches (params in order, fixed values).

    Name, description, source path, YAML formatting and ``0`` vs ``0.0`` do not count, so a
    resumed study can tell a changed space from a moved or reformatted file.
    """
    content = {"params": [dataclasses.asdict(param) for param in space.params], "fixed": dict(space.fixed)}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def describe(space: SearchSpace) -> str:
    """A few lines for ``--help`` and logs: the name, each searched key with its range, the fixed values."""
    head = space.name + (f": {space.description}" if space.description else "")
    width = max((len(param.key) for param in space.params), default=0)
    lines = [head, *(f"  {param.key:<{width}}  {param}" for param in space.params)]
    if space.fixed:
        lines.append("  fixed: " + ", ".join(f"{key}={_text(value)}" for key, value in space.fixed.items()))
    return "\n".join(lines)


# -- loading ------------------------------------------------------------------------------------


def _resolve(path: str | Path) -> Path:
    """A path as given, or the shipped space a bare name (no folder, no suffix) stands for."""
    candidate = Path(path)
    if candidate.exists() or candidate.suffix or len(candidate.parts) != 1:
        return candidate
    shipped = SHIPPED_DIR / f"{candidate}.yaml"
    if not shipped.exists():
        raise SpaceError(f"{path}: no such search space file, nor a shipped space "
                         f"(shipped: {', '.join(shipped_spaces()) or 'none'})")
    return shipped


def _parse(data: Any, source: Path) -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"top level: expected a mapping with name and params, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "description", "params", "fixed"})
    if unknown:
        raise SpaceError(f"{unknown[0]}: unknown section (allowed: name, description, params, fixed)")
    name, description = data.get("name"), data.get("description", "")
    if not isinstance(name, str) or not name:
        raise SpaceError(f"name: must be a non-empty string, got {name!r}")
    if not isinstance(description, str):
        raise SpaceError(f"description: must be a string, got {description!r}")
    params, fixed = data.get("params"), data.get("fixed") or {}
    if not isinstance(params, dict) or not params:
        raise SpaceError(f"params: must be a non-empty mapping of config key to distribution, got {params!r}")
    if not isinstance(fixed, dict):
        raise SpaceError(f"fixed: must be a mapping of config key to value, got {fixed!r}")
    for key in fixed:
        _check_key(key)
    fixed = {key: _coerce(key, value, "fixed value") for key, value in fixed.items()}
    order = list(params)
    parsed = tuple(_parse_param(key, params[key], order[index:], fixed) for index, key in enumerate(order))
    return SearchSpace(name=name, params=parsed, fixed=fixed, source=source, description=description)


def _parse_param(key: Any, spec: Any, not_before: list[str], fixed: Mapping[str, Any]) -> Param:
    """Validate one ``params`` entry; ``not_before`` is this key and those after it."""
    _check_key(key)
    if key in fixed:
        raise SpaceError(f"{key}: both searched and fixed; keep one")
    if not isinstance(spec, dict):
        raise SpaceError(f"{key}: expected a mapping such as {{type: categorical, choices: [...]}}, "
                         f"got {spec!r}")
    kind = spec.get("type")
    if kind not in _FIELDS:
        raise SpaceError(f"{key}: unknown type {kind!r} (known: {', '.join(_FIELDS)})")
    unknown = sorted(set(spec) - {"type", "when", *_FIELDS[kind]})
    if unknown:
        raise SpaceError(f"{key}: unknown field {unknown[0]!r} for type {kind} "
                         f"(allowed: {', '.join(_FIELDS[kind])}, when)")
    if (kind == "per_block") != (key == "block_factors"):
        if key == "block_factors":
            raise SpaceError(f"{key}: needs type per_block")
        raise SpaceError(f"{key}: type per_block is only for block_factors")
    when = _parse_when(key, spec["when"], not_before) if "when" in spec else None
    if kind == "categorical":
        return Param(key, kind, choices=_choices(key, spec, lambda c: _coerce(key, c, "choice")), when=when)
    if kind == "per_block":
        choices = _choices(key, spec, lambda c: _positive_int(key, c))
        return Param(key, kind, choices=choices, blocks=_blocks(key, spec.get("blocks")), when=when)
    return _numeric(key, kind, spec, when)


def _check_key(key: Any) -> None:
    if key not in KEY_TYPES:
        raise SpaceError(f"{key}: unknown config key (known: {', '.join(KEY_TYPES)})")


def _choices(key: str, spec: Mapping[str, Any], convert: Callable[[Any], Any]) -> tuple[Any, ...]:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise SpaceError(f"{key}: choices must be a non-empty list, got {choices!r}")
    return tuple(convert(choice) for choice in choices)


def _blocks(key: str, blocks: Any) -> tuple[int, ...] | None:
    if blocks is None:
        return None
    if not isinstance(blocks, list) or not blocks or not all(is_int(b) and b >= 0 for b in blocks):
        raise SpaceError(f"{key}: blocks must be a non-empty list of block indices (0, 1, ...), "
                         f"got {blocks!r}")
    if len(set(blocks)) != len(blocks):
        raise SpaceError(f"{key}: blocks {blocks} lists a block twice")
    return tuple(blocks)


def _numeric(key: str, kind: str, spec: Mapping[str, Any], when: Condition | None) -> Param:
    """An ``int`` or ``float`` distribution, checked the way Optuna would check it, but at load."""
    takes = KEY_TYPES[key]
    if takes is not float and not (kind == "int" and takes is int):
        raise SpaceError(f"{key}: type {kind} cannot give {key}, which takes {_type_name(takes)}")
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{key}: type {kind} needs low and high")
    low, high = (_bound(key, kind, name, spec[name]) for name in ("low", "high"))
    if low > high:
        raise SpaceError(f"{key}: low {low} > high {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{key}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _bound(key, kind, "step", step)
        if step <= 0:
            raise SpaceError(f"{key}: step must be positive, got {step}")
    if log and low <= 0:
        raise SpaceError(f"{key}: log needs low > 0, got {low}")
    if log and step is not None and (kind == "float" or step != 1):
        raise SpaceError(f"{key}: log cannot be combined with step")
    if kind == "int" and step is None:
        step = 1
    return Param(key, kind, low=low, high=high, step=step, log=log, when=when)


def _bound(key: str, kind: str, name: str, value: Any) -> float:
    if kind == "int":
        if not is_int(value):
            raise SpaceError(f"{key}: {name} must be an integer, got {value!r}")
        return value
    number = as_float(value)
    if number is None:
        raise SpaceError(f"{key}: {name} must be a number, got {value!r}")
    return number


def _parse_when(key: str, text: Any, not_before: list[str]) -> Condition:
    """Parse ``"<key> <op> <value>"``; the value is read as a YAML scalar (or list for ``in``)."""
    match = _CONDITION.fullmatch(text.strip()) if isinstance(text, str) else None
    literal = _yaml_literal(match["value"]) if match else None
    if match is None or literal is None:
        raise SpaceError(f"{key}: bad when {text!r}: expected '<key> <op> <value>' "
                         f"with op one of {', '.join(_OPS)}, e.g. 'S > 1'")
    ref, op = match["key"], match["op"]
    if ref not in KEY_TYPES:
        raise SpaceError(f"{key}: when {text!r} refers to unknown key {ref!r}")
    if ref in not_before:
        raise SpaceError(f"{key}: when {text!r} refers to {ref}, which is not searched before {key}; "
                         "a condition may only use keys searched above it, fixed keys or the base config")
    takes = KEY_TYPES[ref]
    if typing.get_origin(takes) is tuple:
        raise SpaceError(f"{key}: when {text!r}: conditions cannot test {ref}, which is a list")
    if op in _ORDERED_OPS and takes not in (int, float):
        raise SpaceError(f"{key}: when {text!r}: {op} needs a numeric key, {ref} takes {_type_name(takes)}")
    what = f"when {text!r}: value"
    if op != "in":
        return Condition(ref, op, _coerce(ref, literal, what, where=key))
    if not isinstance(literal, list) or not literal:
        raise SpaceError(f"{key}: when {text!r}: 'in' needs a non-empty list such as [1, 2]")
    return Condition(ref, op, tuple(_coerce(ref, item, what, where=key) for item in literal))


def _yaml_literal(text: str) -> Any:
    """A condition's value as YAML reads it (``none`` -> 'none', ``[1, 2]`` -> list); None if unreadable."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _coerce(key: str, value: Any, what: str, where: str | None = None) -> Any:
    """``value`` as the type ``key`` takes (YAML's ``5e-4`` string as a float), or a SpaceError.

    The error names ``where`` (default ``key``): the parameter whose entry holds the value.
    """
    takes = KEY_TYPES[key]
    origin = typing.get_origin(takes)
    if origin is Literal:
        if value in typing.get_args(takes):
            return value
    elif origin is tuple:
        if isinstance(value, list) and all(is_int(item) and item >= 1 for item in value):
            return tuple(value)
    elif takes is float:
        if as_float(value) is not None:
            return as_float(value)
    elif takes is int:
        if is_int(value):
            return value
    elif isinstance(value, takes):
        return value
    raise SpaceError(f"{where or key}: {what} {value!r} is not {_type_name(takes)}")


def _positive_int(key: str, value: Any) -> int:
    if not (is_int(value) and value >= 1):
        raise SpaceError(f"{key}: choice {value!r} is not a positive integer")
    return value


def _type_name(takes: Any) -> str:
    if typing.get_origin(takes) is Literal:
        return "one of " + ", ".join(typing.get_args(takes))
    if typing.get_origin(takes) is tuple:
        return "a list of positive integers"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[takes]


def config_value(config: SplitConfig, key: str) -> Any:
    """The value of a space key (``S``, ``train.lr``) in ``config``."""
    if key.startswith("train."):
        return getattr(config.train, key.removeprefix("train."))
    return getattr(config, key)


def _text(value: Any) -> str:
    """YAML-like text of a value for messages: ``[1, 2, 4]``, ``none``, ``0.5``."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(item) for item in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
