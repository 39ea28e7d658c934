"""Typed, frozen component configuration shared by every recserve component.

Each component declares one `RecserveSettings` subclass whose fields carry a one-line
docstring (kept as the field description). Values come, highest precedence first, from
explicit overrides (the CLI), `RECSERVE_<SECTION>_<FIELD>` environment variables, the
`[<section>]` table of a TOML config file, then the defaults. They are read when a
component starts (`load_settings`), never at import.
"""

from __future__ import annotations

import contextvars
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_FILE_VALUES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "recserve_config_file_values", default={}
)

S = TypeVar("S", bound="RecserveSettings")


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the config file section that load_settings put in context."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        values = _FILE_VALUES.get()
        return values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        values = _FILE_VALUES.get()
        return {k: v for k, v in values.items() if k in self.settings_cls.model_fields}


class RecserveSettings(BaseSettings):
    """Base for component configs.

    Subclasses call `settings_config("batcher")`-style: the title names the config-file
    section and the env prefix is RECSERVE_<TITLE>_.
    """

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, env_prefix="RECSERVE_"
    )
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))


def read_config_file(path: str | Path | None) -> dict[str, Any]:
    """The whole TOML config file as a dict ({} when no file is given)."""
    if path is None:
        return {}
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_settings(cls: type[S], config_file: str | Path | None = None, **overrides: Any) -> S:
    """Build `cls` from overrides (None values ignored), environment, config file, defaults."""
    section_name = cls.model_config.get("title") or ""
    file_values = read_config_file(config_file).get(section_name, {}) if section_name else {}
    token = _FILE_VALUES.set(dict(file_values))
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _FILE_VALUES.reset(token)


def settings_config(section: str) -> SettingsConfigDict:
    """model_config for a component whose config-file table and env prefix are `section`."""
    return SettingsConfigDict(
        title=section,
        env_prefix=f"RECSERVE_{section.upper()}_",
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )
