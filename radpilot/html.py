"""HTML from Jinja2 templates shipped inside RadPilot's packages, escaped by default.

Every page and report RadPilot writes is rendered by an environment from
:func:`template_environment`, so the rules are the same everywhere:

* autoescaping is on for every template: a value is escaped unless it is
  ``markupsafe.Markup`` (markup the code built itself, never text from outside);
* a name a template uses but was not given is an error, not an empty string;
* ``None`` renders as nothing, so an absent DICOM attribute or manifest field leaves
  its cell empty instead of showing "None".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jinja2


def _none_as_empty(value: Any) -> Any:
    return "" if value is None else value


def template_environment(package: str, *, filters: Mapping[str, Callable[..., Any]] | None = None) -> jinja2.Environment:
    """The environment for the templates in ``<package>/templates`` (package data, so they ship with the wheel)."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_none_as_empty,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(filters or {})
    return environment
