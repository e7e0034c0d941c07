"""Settings from the environment: defaults, and a clear error naming the variable for a bad value."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings


def test_uplink_rate_defaults_to_the_models_native_rate() -> None:
    assert Settings.from_env({}).uplink_rate == 16000


@pytest.mark.parametrize(("raw", "rate"), [("8000", 8000), (" 16000 ", 16000), ("", 16000)])
def test_uplink_rate_accepts_the_two_supported_rates(raw: str, rate: int) -> None:
    assert Settings.from_env({"GATEWAY_UPLINK_RATE": raw}).uplink_rate == rate


@pytest.mark.parametrize("raw", ["24000", "8k", "-8000"])
def test_uplink_rate_rejects_anything_else_by_name(raw: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_UPLINK_RATE must be 8000 or 16000"):
        Settings.from_env({"GATEWAY_UPLINK_RATE": raw})
