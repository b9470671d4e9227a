"""The settings as environment variables: errors and unknown names named by variable, the markdown list."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path

from pydantic import (
    BaseModel,
    ValidationError,
)

from stream import native
from stream.settings.paths import PROJECT_ROOT
from stream.settings.root import Settings

log = logging.getLogger(__name__)


# KAIROS_* variables of the project's own files that are not options: docker-compose's host folder of
# the models, the tests' artifact folder, the native build's switch and home (read at import, before any
# setting).
NOT_SETTINGS = frozenset({"KAIROS_MODELS_HOST_DIR", "KAIROS_TEST_ARTIFACTS", native.ENV, native.HOME_ENV})


def _options() -> list[tuple[str, object]]:
    """Every option as (its environment variable, its type): ``KAIROS_<OPTION>`` for the top-level
    ones, ``KAIROS_<GROUP>__<OPTION>`` for the options of a group."""
    options: list[tuple[str, object]] = []
    for name, info in Settings.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            options += [
                (f"KAIROS_{name.upper()}__{option.upper()}", field.annotation)
                for option, field in group.model_fields.items()
            ]
        else:
            options.append((f"KAIROS_{name.upper()}", group))
    return options


def setting_variables() -> list[str]:
    """Every environment variable that sets an option."""
    return [variable for variable, _ in _options()]


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``KAIROS_*`` variables in ``environ`` that set nothing, each with the option it most likely
    meant: the settings ignore unknown names (an option removed since a deployment was written must not
    stop it), so a misspelt one (``KAIROS_POLICY__THRESHHOLD``) would otherwise go unnoticed."""
    known = setting_variables()
    known_upper = set(known)
    dicts = {variable for variable, kind in _options() if typing.get_origin(kind) is dict}
    lines = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith("KAIROS_") or name in NOT_SETTINGS:
            continue
        # A dict option may be set one key at a time (KAIROS_POLICY__TRIGGER_THRESHOLDS__PRICE_DROP).
        if name in known_upper or (name.count("__") > 1 and "__".join(name.split("__")[:2]) in dicts):
            continue
        lines.append(variable + _did_you_mean(name, known))
    return lines


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log a warning naming each ``KAIROS_*`` variable that sets nothing (:func:`unknown_variables`);
    returns them. Called once a command has set up its logging, so the warning is in its format."""
    unknown = unknown_variables(os.environ if environ is None else environ)
    for line in unknown:
        log.warning("ignoring %s: no such setting (docs/settings.md lists them)", line)
    return unknown


def _did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean KAIROS_X__Y?)`` for the known variable ``name`` most likely misspells, or ``""``.

    Within a known group only the option's part is compared: every name of a group shares its long
    prefix, which would make any two of them look alike."""
    group, _, option = name.rpartition("__")
    in_group = {
        known_name.rpartition("__")[2]: known_name
        for known_name in known
        if known_name.startswith(group + "__")
    }
    if group and in_group:
        close = difflib.get_close_matches(option, list(in_group), n=1, cutoff=0.75)
        return f" (did you mean {in_group[close[0]]}?)" if close else ""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
    return f" (did you mean {close[0]}?)" if close else ""


def settings_errors(error: ValidationError) -> list[str]:
    """One line per refused setting of ``Settings()``, named by its environment variable.

    ``policy.max_pushes_per_24h`` is ``KAIROS_POLICY__MAX_PUSHES_PER_24H``; a rule over several options
    of a group (``min_threshold`` above ``max_threshold``) is named by the group, ``KAIROS_POLICY__*``.
    Inputs are never shown (they may be secrets).
    """
    groups = {
        name
        for name, info in Settings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        loc = [str(part) for part in item["loc"]]
        if len(loc) >= 2:
            name = f"KAIROS_{loc[0].upper()}__{loc[1].upper()}" + "".join(f"[{part}]" for part in loc[2:])
        elif loc:
            name = f"KAIROS_{loc[0].upper()}" + ("__*" if loc[0] in groups else "")
        else:
            name = "KAIROS_*"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return lines


def settings_parse_errors(error: Exception, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``KAIROS_*`` variable of a dict or list option whose value is not JSON, for the
    error ``Settings()`` raises then (pydantic-settings names only the group: ``field "policy"``).

    Falls back to the group (``KAIROS_POLICY__*``). The values are never shown (they may be secrets).
    """
    environ = os.environ if environ is None else environ
    found = re.search(r'field "(\w+)"', str(error))
    group = found.group(1) if found else ""
    lines = []
    if group:
        upper = {name.upper(): value for name, value in environ.items()}
        for variable, kind in _options():
            if not variable.startswith(f"KAIROS_{group.upper()}__") or variable not in upper:
                continue
            if typing.get_origin(kind) not in (dict, list):
                continue
            try:
                json.loads(upper[variable])
            except ValueError as exc:
                lines.append(f"{variable}: not a JSON value ({exc})")
    if not lines:
        name = f"KAIROS_{group.upper()}__*" if group else "KAIROS_*"
        lines.append(f"{name}: {error}: {error.__cause__ or ''}".rstrip(": "))
    return lines


def settings_markdown() -> str:
    """Every setting as a markdown table: environment variable, default, description (docs/settings.md)."""
    lines = [
        "# Settings",
        "",
        "Generated by `kairos settings --markdown` from `stream/settings/`; a test keeps it current.",
        "Every option is read from its environment variable (or `.env`); nested groups use `__`.",
        "Numbers must be finite (NaN and infinities are refused). A value out of range stops every",
        "`kairos` command at start (exit code 78) with one line per refused variable. A `KAIROS_*`",
        "variable that sets nothing (misspelt, or an option since removed) is ignored with a warning",
        "that names the option it most likely meant.",
        "",
    ]

    def table(title: str, model: type[BaseModel], prefix: str) -> None:
        lines.extend([f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"])
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                continue
            factory = info.default_factory
            default = factory() if factory is not None else info.default  # type: ignore[call-arg]
            shown = "(secret)" if "Secret" in str(annotation) else f"`{default}`"
            if isinstance(default, Path):
                # Relative to the checkout, so the document is the same wherever the project lives.
                shown = f"`{os.path.relpath(default, PROJECT_ROOT)}`"
            text = (info.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{name.upper()}` | {shown} | {text} |")
        lines.append("")

    table("General", Settings, "KAIROS_")
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            table(
                f"{name} — {(annotation.__doc__ or '').strip().splitlines()[0]}",
                annotation,
                f"KAIROS_{name.upper()}__",
            )
    return "\n".join(lines)
