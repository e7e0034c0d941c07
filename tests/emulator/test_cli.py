"""The `gateway emulator` sub-command."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.emulator import cli


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return parser.parse_args(list(argv))


def test_configure_declares_the_documented_options() -> None:
    """--host, --port, --tls-cert/--tls-key, --scenario and --api-key parse as documented."""
    args = _args("--host", "0.0.0.0", "--port", "0", "--scenario", "s.toml", "--api-key", "k")
    assert (args.host, args.port, args.scenario, args.api_key) == ("0.0.0.0", 0, "s.toml", "k")
    assert args.tls_cert is None


def test_bad_scenario_file_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken scenario file is reported on stderr with exit code 2, no traceback."""
    bad = tmp_path / "bad.toml"
    bad.write_text("speed = 'fast'")
    assert cli.run(_args("--scenario", str(bad))) == 2
    assert "bad.toml" in capsys.readouterr().err


def test_tls_cert_without_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """--tls-cert needs --tls-key."""
    assert cli.run(_args("--tls-cert", "cert.pem")) == 2
    assert "--tls-key" in capsys.readouterr().err
