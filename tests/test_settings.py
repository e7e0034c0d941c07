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


def test_plivo_settings_use_plivo_python_names_and_keep_the_token_secret() -> None:
    env = {"PLIVO_AUTH_ID": "MAXXXXXXXXXXXXXXXXXX", "PLIVO_AUTH_TOKEN": "plivo-secret-token"}
    env |= {"PLIVO_API_BASE": "http://127.0.0.1:9/", "GATEWAY_PLIVO_CONTENT_TYPE": "audio/x-l16; rate=16000"}
    settings = Settings.from_env(env)
    assert (settings.plivo_auth_id, settings.plivo_api_base) == ("MAXXXXXXXXXXXXXXXXXX", "http://127.0.0.1:9")
    assert settings.plivo_content_type == "audio/x-l16;rate=16000"
    assert "plivo-secret-token" in settings.secrets()
    assert "plivo-secret-token" not in repr(settings)
    defaults = Settings.from_env({})
    assert (defaults.plivo_api_base, defaults.plivo_content_type) == (
        "https://api.plivo.com",
        "audio/x-mulaw;rate=8000",
    )
    for bad, name in (
        ({"PLIVO_AUTH_ID": "MA/../x"}, "PLIVO_AUTH_ID="),
        ({"PLIVO_API_BASE": "api.plivo.com"}, "PLIVO_API_BASE="),
        ({"GATEWAY_PLIVO_CONTENT_TYPE": "audio/x-alaw;rate=8000"}, "GATEWAY_PLIVO_CONTENT_TYPE="),
    ):
        with pytest.raises(ConfigError, match=f"^{name}"):
            Settings.from_env(bad)


def test_exotel_settings_keep_the_secret_out_of_reprs_and_errors() -> None:
    env = {"EXOTEL_STREAM_SECRET": "exotel-stream-secret-0123456789"}
    env |= {"GATEWAY_EXOTEL_SAMPLE_RATE": "16000", "GATEWAY_EXOTEL_COUNTRY_CODE": "+65"}
    settings = Settings.from_env(env)
    assert (settings.exotel_sample_rate, settings.exotel_country_code) == (16000, "65")
    assert "exotel-stream-secret-0123456789" in settings.secrets()
    assert "exotel-stream-secret-0123456789" not in repr(settings)
    defaults = Settings.from_env({})
    assert (defaults.exotel_stream_secret, defaults.exotel_sample_rate, defaults.exotel_country_code) == (
        "",
        8000,
        "91",
    )
    for bad, name in (
        ({"EXOTEL_STREAM_SECRET": "short"}, "EXOTEL_STREAM_SECRET "),
        ({"EXOTEL_STREAM_SECRET": "x" * 20 + "@/"}, "EXOTEL_STREAM_SECRET "),
        ({"GATEWAY_EXOTEL_SAMPLE_RATE": "44100"}, "GATEWAY_EXOTEL_SAMPLE_RATE="),
        ({"GATEWAY_EXOTEL_COUNTRY_CODE": "091"}, "GATEWAY_EXOTEL_COUNTRY_CODE="),
    ):
        with pytest.raises(ConfigError, match=f"^{name}") as refused:
            Settings.from_env(bad)
        assert "@/" not in str(refused.value)


def test_telnyx_settings_use_the_sdks_names_and_check_the_public_key_at_start() -> None:
    public = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE="  # base64 of 32 bytes
    env = {"TELNYX_API_KEY": "KEYtelnyx-secret", "TELNYX_PUBLIC_KEY": public}
    env |= {"TELNYX_API_BASE": "http://127.0.0.1:9/v2/", "GATEWAY_TELNYX_CODEC": "l16"}
    settings = Settings.from_env(env)
    assert (settings.telnyx_public_key, settings.telnyx_api_base, settings.telnyx_codec) == (
        public,
        "http://127.0.0.1:9/v2",
        "L16",
    )
    assert "KEYtelnyx-secret" in settings.secrets()
    assert "KEYtelnyx-secret" not in repr(settings)
    defaults = Settings.from_env({})
    assert (defaults.telnyx_api_base, defaults.telnyx_codec) == ("https://api.telnyx.com/v2", "PCMU")
    for bad, name in (
        ({"TELNYX_PUBLIC_KEY": "not-base64!"}, "TELNYX_PUBLIC_KEY "),
        ({"TELNYX_PUBLIC_KEY": "c2hvcnQ="}, "TELNYX_PUBLIC_KEY "),
        ({"TELNYX_API_BASE": "api.telnyx.com"}, "TELNYX_API_BASE="),
        ({"GATEWAY_TELNYX_CODEC": "G722"}, "GATEWAY_TELNYX_CODEC="),
    ):
        with pytest.raises(ConfigError, match=f"^{name}"):
            Settings.from_env(bad)
