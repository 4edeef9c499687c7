"""The base class of every component's typed configuration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ComponentConfig(BaseModel):
    """Typed parameters of one component, validated from a recipe section.

    Subclasses declare each field with a type, a default or ``Field(...)`` constraint, and an
    attribute docstring: the docstring becomes the field's description in ``metods show`` and
    in error reports. Unknown keys are rejected so that a typo never passes silently.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)
