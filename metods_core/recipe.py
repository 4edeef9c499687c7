"""Recipes: YAML files that compose an experiment, validated into a typed ``Recipe``.

Loading (``load_recipe_dict``) uses OmegaConf, and only its data features: no resolver that runs
code is registered, and YAML is read with a safe loader.

1. **Composition.** A top-level ``defaults: [base.yaml, ...]`` list names base recipes, by paths
   relative to the including file. They are loaded recursively and merged in order, then the
   file itself is merged on top. A file that includes itself, directly or not, is an error.
2. **Overrides.** Command-line ``key=value`` items (OmegaConf dotlist: ``trainer.max_steps=10``,
   ``logger.wandb.tags=[a,b]``) are merged on top.
3. **Component switching.** When an override sets ``<component>.name`` (component = task,
   plasticity, readout or meta_optimizer) to another plugin than the recipe names, that section
   is replaced: it keeps only the keys of the old section that the new plugin's ``Config``
   accepts, plus the keys the overrides set. So ``plasticity.name=hebbian`` drops the MetODS-only
   keys instead of failing on them, and ``plasticity.name=hebbian plasticity.lr=0.1`` sets the
   new rule's parameters.
4. **Interpolation.** ``${path.to.key}`` values are resolved last, on the merged result; a
   reference to a missing key, or a ``???`` value left unset, is an error.

Validation (``validate_recipe``) runs in two phases and reports every problem of both at once:
the recipe's own fields (the sections below and the shape of the component sections), then each
component's parameters against its plugin's ``Config``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError, create_model

from metods_core.agent import AgentConfig
from metods_core.errors import MetodsError
from metods_core.interfaces.config import ComponentConfig
from metods_core.registry import GROUPS, PluginError, list_plugins, load_plugin, suggest

COMPONENTS: tuple[str, ...] = ("task", "plasticity", "readout", "meta_optimizer")
"""The recipe sections that name a plugin."""

_SECTION = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe."""

    path: str
    """Dotted path of the offending key (``plasticity.recursion_steps``), or "" for the file."""
    message: str
    """What is wrong: the bad value, what was expected, and a hint when there is one."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RecipeError(MetodsError):
    """A recipe could not be loaded or validated; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[Problem], source: str | Path | None = None) -> None:
        self.problems = list(problems)
        self.source = str(source) if source is not None else None
        super().__init__(self.report())

    def report(self) -> str:
        """Return every problem, one per line, under a header naming the recipe."""
        count = len(self.problems)
        where = f"recipe {self.source}" if self.source else "the recipe"
        lines = [f"{where} has {count} problem{'s' if count != 1 else ''}:"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


class DataConfig(BaseModel):
    """How tasks are fed to the outer loop."""

    model_config = _SECTION
    batch_tasks: int = Field(default=64, gt=0)
    """Tasks per outer step, per device."""


class TrainerConfig(BaseModel):
    """Lightning Trainer settings and the run's compute budget."""

    model_config = _SECTION
    max_steps: int = Field(default=3000, gt=0)
    """Outer (meta-)optimisation steps."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu, cuda, mps..."""
    devices: int | str | list[int] = 1
    """Devices per node: a count, "auto", or a list of device indices."""
    num_nodes: int = Field(default=1, gt=0)
    """Machines taking part in the run."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ddp_spawn..."""
    precision: str = "32-true"
    """Lightning precision: 32-true, 16-mixed, bf16-mixed, 64-true..."""
    log_every_n_steps: int = Field(default=10, gt=0)
    """Log metrics every this many outer steps."""
    checkpoint_every_n_steps: int = Field(default=100, gt=0)
    """Save a resumable checkpoint every this many outer steps."""
    num_threads: int | None = Field(default=None, gt=0)
    """Torch threads per process; None: torch's default, or the cores split evenly over the
    processes of a multi-device run on this node."""
    compile: bool = False
    """torch.compile the plasticity rule's step, the hot path (faster long runs, slower start)."""


class WandbConfig(BaseModel):
    """Weights & Biases logging."""

    model_config = _SECTION
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline (no account or network needed; `wandb sync` later), online, or disabled."""
    project: str = "metods"
    """W&B project name."""
    entity: str | None = None
    """W&B team or user; None uses the account's default."""
    group: str | None = None
    """Groups runs in the W&B interface (an ablation, a sweep)."""
    tags: list[str] = Field(default_factory=list)
    """Free-form labels of the run."""


class LoggerConfig(BaseModel):
    """Where metrics go."""

    model_config = _SECTION
    wandb: WandbConfig = Field(default_factory=lambda: WandbConfig())
    """Weights & Biases settings."""
    csv: bool = True
    """Also write metrics.csv in the run directory."""


class EvaluationConfig(BaseModel):
    """Meta-testing on held-out tasks."""

    model_config = _SECTION
    episodes: int = Field(default=1000, gt=0)
    """Held-out lifetimes (one task each) to evaluate."""
    batch_tasks: int = Field(default=250, gt=0)
    """Lifetimes run in parallel."""
    greedy: bool = False
    """Act with the most likely action instead of sampling."""


@dataclasses.dataclass(frozen=True)
class ComponentSpec:
    """A component chosen by a recipe: its name, its class and its validated parameters."""

    name: str
    """The name the recipe used (an entry-point name or ``module:Class``)."""
    cls: type
    """The plugin class."""
    config: ComponentConfig
    """The validated ``cls.Config``."""


class Recipe(BaseModel):
    """A whole experiment: components, their parameters, and how to train and evaluate."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, frozen=True, arbitrary_types_allowed=True
    )
    seed: int = 0
    """Seed of every random stream of the run."""
    name: str | None = None
    """Run name; None derives one from the recipe file and the time."""
    task: InstanceOf[ComponentSpec]
    """Task sampler (entry-point group metods.tasks)."""
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig.model_validate({}))
    """Shape of the agent around its plasticity rule."""
    plasticity: InstanceOf[ComponentSpec]
    """Plasticity rule (entry-point group metods.plasticity)."""
    readout: InstanceOf[ComponentSpec]
    """Read-out (entry-point group metods.readout)."""
    meta_optimizer: InstanceOf[ComponentSpec]
    """Outer-loop algorithm (entry-point group metods.meta_optimizers)."""
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    """How tasks are fed to the outer loop."""
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig())
    """Lightning Trainer settings."""
    logger: LoggerConfig = Field(default_factory=lambda: LoggerConfig())
    """Where metrics go."""
    evaluation: EvaluationConfig = Field(default_factory=lambda: EvaluationConfig())
    """Meta-testing on held-out tasks."""
    source: str | None = None
    """The recipe file this was loaded from."""


# Phase 1 validates every field of Recipe except the components, which are checked by hand.
_RecipeFields = create_model(  # type: ignore[call-overload]  # pydantic's overloads miss this form
    "_RecipeFields",
    __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
    **{
        name: (field.annotation, field)
        for name, field in Recipe.model_fields.items()
        if name not in COMPONENTS
    },
)


# ---------------------------------------------------------------------------------------------
# Loading: files, defaults, overrides, component switching, interpolation
# ---------------------------------------------------------------------------------------------


def load_recipe_dict(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Load ``path`` with its defaults and ``overrides``; return resolved plain data.

    Raises:
        RecipeError: missing file, YAML error, bad ``defaults``, bad override, bad interpolation.
    """
    config = _compose(Path(path), (), source=path)
    config = _apply_overrides(config, overrides, source=path)
    return _resolve(config, source=path)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (with component switching) to plain recipe data."""
    config = _apply_overrides(OmegaConf.create(dict(data)), overrides, source=None)
    return _resolve(config, source=None)


def _compose(path: Path, chain: tuple[Path, ...], source: str | Path) -> DictConfig:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise RecipeError([Problem("defaults", f"defaults form a cycle: {cycle}")], source)
    if not resolved.is_file():
        where = f" (listed in the defaults of {chain[-1]})" if chain else ""
        raise RecipeError([Problem("", f"file not found: {path}{where}")], source)
    try:
        loaded = OmegaConf.load(resolved)
    except yaml.YAMLError as exc:
        raise RecipeError([Problem("", f"{path}: {_yaml_error(exc)}")], source) from None
    except (OSError, UnicodeDecodeError, OmegaConfBaseException) as exc:
        raise RecipeError([Problem("", f"{path}: cannot read: {exc}")], source) from None
    if not isinstance(loaded, DictConfig):
        raise RecipeError(
            [Problem("", f"{path}: a recipe must be a mapping of sections, got a list")], source
        )
    defaults = loaded.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, ListConfig | list) or not all(
        isinstance(item, str) for item in defaults
    ):
        message = f"{path}: expected a list of recipe paths, got {defaults!r}"
        raise RecipeError([Problem("defaults", message)], source)
    bases = [_compose(resolved.parent / item, (*chain, resolved), source) for item in defaults]
    return _merge([*bases, loaded], f"{path}: cannot merge it onto its defaults", source)


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return "YAML syntax error: " + " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    return f"YAML syntax error at {where}: {exc.problem}" + (f" ({context})" if context else "")  # type: ignore[attr-defined]


def _apply_overrides(
    config: DictConfig, overrides: Sequence[str], source: str | Path | None
) -> DictConfig:
    problems = [
        Problem("", f"override {item!r} is not of the form key=value")
        for item in overrides
        if "=" not in item or item.startswith(("+", "~", "="))
    ]
    if problems:
        raise RecipeError(problems, source)
    for item in overrides:
        try:
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            reason = " ".join(str(exc).split())
            problems.append(
                Problem("", f"override {item!r} has a value that is not YAML: {reason}")
            )
    if problems:
        raise RecipeError(problems, source)
    dotlist = OmegaConf.from_dotlist(list(overrides))
    for kind in COMPONENTS:
        new_name = OmegaConf.select(dotlist, f"{kind}.name", default=None)
        old_name = OmegaConf.select(
            config, f"{kind}.name", default=None, throw_on_resolution_failure=False
        )
        if not isinstance(new_name, str) or new_name == old_name:
            continue
        old = config.get(kind)
        raw = OmegaConf.to_container(old, resolve=False) if isinstance(old, DictConfig) else {}
        accepted = _accepted_keys(kind, new_name)
        kept = {key: value for key, value in raw.items() if key in accepted}  # type: ignore[union-attr]
        config[kind] = {"name": new_name, **kept}
    return _merge([config, dotlist], "cannot apply the overrides", source)


def _merge(configs: list[DictConfig], what: str, source: str | Path | None) -> DictConfig:
    try:
        merged = OmegaConf.merge(*configs)
    except (OmegaConfBaseException, TypeError, ValueError) as exc:
        message = str(getattr(exc, "msg", exc)).splitlines()[0]
        key = getattr(exc, "full_key", None) or ""
        raise RecipeError([Problem(key, f"{what}: {message}")], source) from None
    assert isinstance(merged, DictConfig)
    return merged


def _accepted_keys(kind: str, name: str) -> set[str]:
    try:
        cls = load_plugin(kind, name)
    except PluginError:
        return set()  # validation reports the unknown or broken plugin
    return set(cls.Config.model_fields)  # type: ignore[attr-defined]


def _resolve(config: DictConfig, source: str | Path | None) -> dict[str, Any]:
    try:
        data = OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        problems = _interpolation_problems(config) or [Problem("", f"interpolation failed: {exc}")]
        raise RecipeError(problems, source) from None
    assert isinstance(data, dict)
    return data  # type: ignore[return-value]


def _interpolation_problems(node: DictConfig | ListConfig) -> list[Problem]:
    problems = []
    keys: Sequence[Any] = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        try:
            value = node[key]
        except OmegaConfBaseException as exc:
            first_line = str(getattr(exc, "msg", exc)).splitlines()[0]
            raw = node._get_node(key)._value()  # type: ignore[union-attr]  # the unresolved text
            path = getattr(exc, "full_key", "") or str(key)
            problems.append(Problem(path, f"{first_line} (in {raw!r})"))
            continue
        if isinstance(value, DictConfig | ListConfig):
            problems += _interpolation_problems(value)
    return problems


# ---------------------------------------------------------------------------------------------
# Validation: the recipe's own fields, then each component against its plugin's Config
# ---------------------------------------------------------------------------------------------


_MISSING = object()


def validate_recipe(data: Mapping[str, Any], source: str | Path | None = None) -> Recipe:
    """Validate plain recipe data into a ``Recipe``, reporting every problem at once.

    ``source`` names the file in error reports; it is stored in the recipe unless ``data``
    already records one (a saved resolved recipe keeps the path it was first loaded from).

    Raises:
        RecipeError: with one ``Problem`` per bad key.
    """
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise RecipeError([Problem("", f"a recipe must be a mapping, got {got}")], source)
    problems: list[Problem] = []
    own = {key: value for key, value in data.items() if key not in COMPONENTS}
    if own.get("source") is None:
        own["source"] = str(source) if source is not None else None
    fields = None
    try:
        fields = _RecipeFields.model_validate(own)
    except ValidationError as exc:
        problems += pydantic_problems(exc, _RecipeFields, known=list(Recipe.model_fields))
    specs: dict[str, Any] = {}
    for kind in COMPONENTS:
        spec, found = _validate_component(kind, data.get(kind, _MISSING))
        problems += found
        specs[kind] = spec
    if problems or fields is None:
        raise RecipeError(problems, source)
    values = {name: getattr(fields, name) for name in type(fields).model_fields}
    return Recipe(**values, **specs)


def _validate_component(kind: str, section: Any) -> tuple[ComponentSpec | None, list[Problem]]:
    example = f"write e.g. `{kind}: {{name: <plugin>}}`"
    if section is _MISSING or section is None:
        return None, [Problem(kind, f"missing required section; {example}{_available(kind)}")]
    if not isinstance(section, Mapping):
        hint = f"`{kind}: {{name: {section}}}`" if isinstance(section, str) else example
        message = f"expected a mapping with a 'name', got {_show(section)}; write {hint}"
        return None, [Problem(kind, message)]
    name = section.get("name")
    if name is None:
        message = f"missing required field: the plugin's name{_available(kind)}"
        return None, [Problem(f"{kind}.name", message)]
    if not isinstance(name, str):
        return None, [Problem(f"{kind}.name", f"expected a plugin name, got {_show(name)}")]
    try:
        cls = load_plugin(kind, name)
    except PluginError as exc:  # unknown name (with suggestion), broken, conflicting, invalid
        return None, [Problem(f"{kind}.name", str(exc))]
    params = {key: value for key, value in section.items() if key != "name"}
    config_cls: type[ComponentConfig] = cls.Config  # type: ignore[attr-defined]
    try:
        config = config_cls.model_validate(params)
    except ValidationError as exc:
        return None, pydantic_problems(exc, config_cls, prefix=kind, known=["name"])
    return ComponentSpec(name=name, cls=cls, config=config), []


def _available(kind: str) -> str:
    names = sorted({info.name for info in list_plugins(kind)})
    group = GROUPS[kind]
    return (
        f" (plugins in {group}: {', '.join(names)})" if names else f" (none installed in {group})"
    )


def pydantic_problems(
    error: ValidationError, model: type[BaseModel], prefix: str = "", known: Sequence[str] = ()
) -> list[Problem]:
    """Turn a pydantic ``ValidationError`` of ``model`` into problems with dotted paths.

    Args:
        error: the error raised by ``model.model_validate``.
        model: the validated model, used to suggest field names and describe missing fields.
        prefix: dotted path of the model inside the recipe.
        known: extra valid keys at the model's top level (for "did you mean").
    """
    # Errors of one union field (one per member type) become one problem, in first-seen order.
    grouped: dict[Any, list[tuple[str, Any]]] = {}
    problems: dict[Any, Problem] = {}
    for index, err in enumerate(error.errors(include_url=False)):
        parts, owner, tag_at = _walk(model, err["loc"])
        if tag_at is None:
            extra = known if owner is model else ()
            problems[index] = Problem(_join(prefix, parts), _message(err, owner, extra))
            continue
        field = tuple(parts[:tag_at])
        grouped.setdefault(field, []).append((str(err["loc"][tag_at]), err["input"]))
        names = list(dict.fromkeys(tag for tag, _ in grouped[field]))
        expected = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        message = f"expected {expected}, got {_show(grouped[field][0][1])}"
        problems[field] = Problem(_join(prefix, field), message)
    return list(problems.values())


def _join(prefix: str, parts: Sequence[str]) -> str:
    return ".".join([prefix, *parts] if prefix else parts)


def _walk(
    model: type[BaseModel], loc: tuple[Any, ...]
) -> tuple[list[str], type[BaseModel], int | None]:
    """Follow ``loc`` through nested models: (path parts, model owning the last key, tag index)."""
    parts: list[str] = []
    owner, tag_at = model, None
    current: Any = model
    for item in loc:
        as_model = _model_of(current)
        if isinstance(item, str) and as_model is not None:
            owner = as_model
            parts.append(item)
            field = as_model.model_fields.get(item)
            current = field.annotation if field is not None else None
        elif isinstance(item, str) and _is_union(current) and tag_at is None:
            tag_at = len(parts)  # pydantic names the union member that failed; not a key
            current = None
        else:
            parts.append(str(item))
            current = None
    return parts, owner, tag_at


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if _is_union(annotation) or get_origin(annotation) is Union:
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _model_of(members[0])
    return None


def _is_union(annotation: Any) -> bool:
    if get_origin(annotation) not in (Union, UnionType):
        return False
    return len([arg for arg in get_args(annotation) if arg is not type(None)]) > 1


def _message(err: Any, owner: type[BaseModel], extra_keys: Sequence[str]) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        fields = list(dict.fromkeys([*extra_keys, *owner.model_fields]))
        match = suggest(key, fields)
        if match:
            return f"unknown field (did you mean {match!r}?)"
        return f"unknown field; expected one of: {', '.join(fields)}"
    if kind == "missing":
        field = owner.model_fields.get(str(err["loc"][-1]))
        description = f" ({field.description})" if field is not None and field.description else ""
        return f"missing required field{description}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of settings, got {_show(value)}"
    message = re.sub(r"^Input should be ", "expected ", err["msg"])
    message = re.sub(r"^Value error, ", "", message)
    message += f", got {_show(value)}"
    if kind in ("literal_error", "enum") and isinstance(value, str):
        choices = re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", "")))
        match = suggest(value, choices)
        if match:
            message += f" (did you mean {match!r}?)"
    return message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------
# Whole-recipe helpers
# ---------------------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Load, compose, override, resolve and validate the recipe at ``path``."""
    return validate_recipe(load_recipe_dict(path, overrides), source=path)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Return ``recipe`` as plain data that ``validate_recipe`` turns back into an equal recipe."""
    data: dict[str, Any] = {}
    for name in Recipe.model_fields:
        value = getattr(recipe, name)
        if isinstance(value, ComponentSpec):
            data[name] = {"name": value.name, **value.config.model_dump()}
        elif isinstance(value, BaseModel):
            data[name] = value.model_dump()
        else:
            data[name] = value
    return _plain(data)


def recipe_to_yaml(recipe: Recipe) -> str:
    """Return ``recipe`` as YAML text that ``load_recipe`` reads back into an equal recipe."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=False)


def _plain(value: Any) -> Any:
    """Make ``value`` YAML-safe and interpolation-safe."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and "${" in value:
        return value.replace("${", "\\${")  # a literal "${", not an interpolation
    return value
