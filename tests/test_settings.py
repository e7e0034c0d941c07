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


def test_uplink_batch_defaults_to_one_phone_frame_per_message() -> None:
    assert Settings.from_env({}).uplink_batch_ms == 20
    assert Settings.from_env({"GATEWAY_UPLINK_BATCH_MS": "40"}).uplink_batch_ms == 40


@pytest.mark.parametrize("raw", ["30", "200", "forty"])
def test_uplink_batch_rejects_sizes_outside_the_guidance_by_name(raw: str) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_UPLINK_BATCH_MS must be 20, 40, 60, 80 or 100"):
        Settings.from_env({"GATEWAY_UPLINK_BATCH_MS": raw})
