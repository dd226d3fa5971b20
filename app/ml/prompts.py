"""Prompt templates: one type that training (`Hyperparameters.prompt_templates`) and `/predict`
(`prompt_templates` with `labels`) both validate with, and the one default.

A template is filled with `str.format` (`app.ml.encode.class_prompts`), so the rule is the
formatter's: exactly one replacement field, `{}`, where the class name goes; `{{` and `}}` are
literal braces.
"""

from __future__ import annotations

from string import Formatter
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."
# Templates per job or request: each costs one text-tower pass per label.
MAX_PROMPT_TEMPLATES = 32


def check_prompt_template(template: str) -> str:
    """The template, if it holds exactly one `{}`, which becomes the class name."""
    try:
        names = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise _refused(f"prompt template {template!r} is not a valid template: {error}") from None
    if names != [""]:
        raise _refused(
            f"prompt template {template!r} must contain exactly one '{{}}' where the label goes"
        )
    return template


def _refused(message: str) -> PydanticCustomError:
    # No context is given, so the message's own braces are printed as they are.
    return PydanticCustomError("prompt_template", message)


PromptTemplate = Annotated[
    str, Field(min_length=2, max_length=200), AfterValidator(check_prompt_template)
]
PromptTemplates = Annotated[
    list[PromptTemplate], Field(min_length=1, max_length=MAX_PROMPT_TEMPLATES)
]
