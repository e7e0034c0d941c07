"""Scenario files and rule matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.emulator import Rule, Scenario
from gateway.errors import ConfigError

TOML = """
speed = 2.0
silence_duration_ms = 400
go_away_after_s = 540

[[rules]]
text_contains = "weather"
tool = "get_weather"
args = { city = "Paris" }
reply = "The result is: {result}"

[[rules]]
dtmf = "0"
say = "Transferring you now."
close = 1000
"""


def test_load_toml_scenario(tmp_path: Path) -> None:
    """A TOML scenario file sets knobs and rules."""
    path = tmp_path / "demo.toml"
    path.write_text(TOML)
    scenario = Scenario.load(path)
    assert scenario.speed == 2.0
    assert scenario.silence_duration_ms == 400
    assert scenario.go_away_after_s == 540
    assert scenario.rules[0] == Rule(text_contains="weather", tool="get_weather", args={"city": "Paris"})
    assert scenario.rules[1].close == 1000


def test_load_json_scenario(tmp_path: Path) -> None:
    """A JSON scenario file is read the same way."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"setup_delay_s": 1.5, "rules": [{"turn": 2, "say": "Second!"}]}))
    scenario = Scenario.load(path)
    assert scenario.setup_delay_s == 1.5
    assert scenario.rules == [Rule(turn=2, say="Second!")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sped = 2", "unknown key(s) sped"),
        ("[[rules]]\nsay = 'hi'", "needs a trigger"),
        ("[[rules]]\nturn = 1", "needs an action"),
        ("[[rules]]\nturn = 1\nsay = 'x'\nvoice = 'y'", "rules[0]: unknown key(s) voice"),
        ("audio_chunk_ms = 1", "audio_chunk_ms"),
        ("speed = = 1", "not valid TOML"),
    ],
)
def test_bad_scenario_files_name_the_problem(tmp_path: Path, content: str, message: str) -> None:
    """Bad scenario files raise ConfigError naming the file and the problem."""
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"bad\.toml") as info:
        Scenario.load(path)
    assert message in str(info.value)


def test_missing_scenario_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="cannot read"):
        Scenario.load(tmp_path / "nope.toml")


def test_rule_triggers() -> None:
    """Text, turn number and DTMF triggers match as documented; all given triggers must match."""
    assert Rule(text_contains="Weather", say="x").matches(1, "what's the weather?")
    assert not Rule(text_contains="weather", say="x").matches(1, None)
    assert Rule(turn=2, say="x").matches(2, None)
    assert not Rule(turn=2, say="x").matches(3, "hi")
    dtmf = Rule(dtmf="5", say="x")
    assert dtmf.matches(1, "5")
    assert dtmf.matches(1, "The caller pressed 5")
    assert not dtmf.matches(1, "55")
    assert not Rule(turn=1, text_contains="a", say="x").matches(1, "bbb")
