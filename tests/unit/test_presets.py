"""Instrument presets (jointcal's applyOverrides): bundled YAML applied before the user's overrides.

The expected values are those of LSST's obs packages' config/jointcal.py (cited in each YAML):
obs_subaru and obs_cfht raise astrometryVisitOrder to 7, obs_decam keeps jointcal's defaults.
"""

import argparse

import pytest
import yaml

from jointcal_core.cli import load_config
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import ConfigError
from jointcal_core.presets import apply_preset, available_presets


def test_every_camera_has_a_valid_preset():
    assert available_presets() == ["decam", "generic", "hsc", "megacam"]
    for name in available_presets():
        config = apply_preset(JointcalConfig(), name)
        assert config == JointcalConfig.from_dict(config.to_dict())


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "hsc",
            {"astrometryVisitOrder": 7, "sourceFluxType": "apFlux_12_0", "astrometryModel": "constrained"},
        ),
        ("megacam", {"astrometryVisitOrder": 7, "sourceFluxType": "", "photometryVisitOrder": 7}),
        (
            "decam",
            {"astrometryVisitOrder": 5, "astrometryChipOrder": 1, "photometryModel": "constrainedMagnitude"},
        ),
        ("generic", {"astrometryModel": "simple", "photometryModel": "simpleMagnitude"}),
    ],
)
def test_preset_values_follow_the_lsst_obs_packages(name, expected):
    config = apply_preset(JointcalConfig(), name.upper())  # case-insensitive
    assert {k: getattr(config, k) for k in expected} == expected


def test_presets_cite_their_source():
    from importlib import resources

    for name in ("hsc", "megacam", "decam"):
        text = resources.files("jointcal_core.presets").joinpath(f"{name}.yaml").read_text()
        assert "config/jointcal.py" in text and "commit" in text, name
        assert yaml.safe_load(text)


def test_unknown_instrument_is_a_config_error():
    with pytest.raises(
        ConfigError, match="unknown instrument 'lsstcam'; known: decam, generic, hsc, megacam"
    ):
        apply_preset(JointcalConfig(), "lsstcam")


def test_user_overrides_win_over_the_preset(tmp_path):
    cfg_file = tmp_path / "my.yaml"
    cfg_file.write_text("photometryVisitOrder: 3\n")
    args = argparse.Namespace(instrument="hsc", config=str(cfg_file), overrides=["astrometryVisitOrder=6"])
    config = load_config(args)
    assert config.astrometryVisitOrder == 6  # -c beats the preset's 7
    assert config.photometryVisitOrder == 3  # the config file beats the preset's 7
    assert config.sourceFluxType == "apFlux_12_0"  # the preset beats the default
    args = argparse.Namespace(instrument="hsc", config=None, overrides=[])
    assert load_config(args).astrometryVisitOrder == 7
