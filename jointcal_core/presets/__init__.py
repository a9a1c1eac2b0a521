"""Instrument presets (jointcal's ``applyOverrides``): YAML option sets applied before user overrides."""

from __future__ import annotations

from importlib import resources

import yaml

from ..config import JointcalConfig
from ..exceptions import ConfigError

__all__ = ["available_presets", "apply_preset"]


def available_presets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".yaml"))


def apply_preset(config: JointcalConfig, name: str) -> JointcalConfig:
    """Apply the preset ``name`` to ``config`` in place and return it."""
    key = name.lower()
    if key not in available_presets():
        raise ConfigError(f"unknown instrument '{name}'; known: {', '.join(available_presets())}",
                          field="instrument")
    values = yaml.safe_load(resources.files(__package__).joinpath(f"{key}.yaml").read_text()) or {}
    config.update_from(values)
    return config
