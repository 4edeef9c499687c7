"""The base class of every component's typed configuration."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """Typed parameters of one component, validated from a recipe section.

    Subclasses declare each field with a type, a default or ``Field(...)`` constraint, and an
    attribute docstring: the docstring becomes the field's description in ``metods show`` and
    in error reports. Unknown keys are rejected so that a typo never passes silently, and float
    fields reject ``nan`` and ``inf`` (a field that needs them sets
    ``Field(allow_inf_nan=True)``).
    """

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, frozen=True, allow_inf_nan=False
    )

    RESUMABLE_FIELDS: ClassVar[tuple[str, ...]] = ()
    """Fields a resume may change although the component is part of the run's identity: those
    that set only how fast its meta-parameters learn (learning-rate multipliers), not what the
    component computes. The saved optimizer moments are regrouped to the new rates
    (``metods_core.training.regroup``). Empty by default; a meta-optimizer's fields may all
    change on resume anyway."""
