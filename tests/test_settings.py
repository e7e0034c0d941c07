"""Settings from the environment: defaults, and a clear one-line error naming the variable for a bad value."""

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
    with pytest.raises(ConfigError, match=r"GATEWAY_UPLINK_RATE='.*' is not one of 8000, 16000"):
        Settings.from_env({"GATEWAY_UPLINK_RATE": raw})


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " ON "])
def test_flags_accept_the_usual_spellings_of_on(raw: str) -> None:
    s = Settings.from_env({"GATEWAY_ALLOW_UNSIGNED": raw, "GATEWAY_PRECONNECT": raw, "GATEWAY_RECORDS": raw})
    assert (s.allow_unsigned_webhooks, s.preconnect, s.records) == (True, True, True)


@pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off", "Off"])
def test_flags_accept_the_usual_spellings_of_off(raw: str) -> None:
    s = Settings.from_env({"GATEWAY_ALLOW_UNSIGNED": raw, "GATEWAY_PRECONNECT": raw, "GATEWAY_RECORDS": raw})
    assert (s.allow_unsigned_webhooks, s.preconnect, s.records) == (False, False, False)


def test_a_flag_that_is_neither_is_refused_by_name_not_guessed() -> None:
    """``GATEWAY_PRECONNECT=off`` used to mean *on*: a value that is neither on nor off is an error."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"GATEWAY_PRECONNECT": "maybe"})
    assert str(info.value) == (
        "GATEWAY_PRECONNECT='maybe' is not on or off: use 1/0, true/false, yes/no or on/off"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT='http' is not a whole number"),
        ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT must be a port number from 1 to 65535, got 70000"),
        ({"GATEWAY_LOG_LEVEL": "verbose"}, "GATEWAY_LOG_LEVEL='verbose' is not one of DEBUG, INFO,"),
        ({"GATEWAY_LOG_FORMAT": "xml"}, "GATEWAY_LOG_FORMAT='xml' is not one of text, json"),
        ({"GATEWAY_MAX_CALLS": "-3"}, "GATEWAY_MAX_CALLS='-3' must not be negative"),
        ({"GATEWAY_LIVE_GIVE_UP_S": "soon"}, "GATEWAY_LIVE_GIVE_UP_S='soon' is not a number of seconds"),
        (
            {"GATEWAY_PUBLIC_URL": "voice.example.com"},
            "GATEWAY_PUBLIC_URL='voice.example.com' is not an http",
        ),
        ({"GEMINI_BASE_URL": "generativelanguage.googleapis.com"}, "GEMINI_BASE_URL='generativelanguage"),
        ({"GEMINI_MODEL": "Gemini Live"}, "GEMINI_MODEL: 'Gemini Live' is not a Gemini model id"),
        (
            {"GEMINI_MODEL": "gemini-2.0-flash-live-001"},
            "GEMINI_MODEL: 'gemini-2.0-flash-live-001' has been shut",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_api_key_follows_google_genai_google_api_key_first() -> None:
    assert Settings.from_env({"GEMINI_API_KEY": "a"}).gemini_api_key == "a"
    assert Settings.from_env({"GOOGLE_API_KEY": "b", "GEMINI_API_KEY": "a"}).gemini_api_key == "b"


def test_no_key_never_turns_the_emulator_on_by_itself() -> None:
    """A deployment that forgot its key must not answer callers with the echo emulator."""
    assert not Settings.from_env({}).embedded_emulator


@pytest.mark.parametrize("model", ["gemini-3.8-live", "models/gemini-3.1-flash-live-preview"])
def test_gemini_model_accepts_live_model_ids(model: str) -> None:
    assert Settings.from_env({"GEMINI_MODEL": model}).gemini_model == model
