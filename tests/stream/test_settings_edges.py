"""Settings the worker cannot run with are refused when they are read, named by their variable.

Each value refused here used to be accepted and then crash, loop or silently switch something off in
the middle of the stream; the edges that still make sense are accepted.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream.cli import EXIT_CONFIG, main
from stream.settings import Settings, settings_errors


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """The settings with ``env`` (variable name -> value) set and nothing else read."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    """The lines naming what ``Settings()`` refused with ``env`` set (it must refuse)."""
    with pytest.raises(ValidationError) as info:
        load(monkeypatch, **env)
    return settings_errors(info.value)


def test_a_refused_setting_is_named_by_its_variable_and_stops_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAIROS_POLICY__MAX_PUSHES_PER_24H", "-5")
    monkeypatch.setenv("KAIROS_KAFKA__SASL_PASSWORD", "hunter2")  # refused too, and never echoed
    assert main(["settings"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "kairos settings: invalid settings" in err
    assert "KAIROS_POLICY__MAX_PUSHES_PER_24H: Input should be greater than or equal to 0" in err
    assert "KAIROS_KAFKA__*: SASL settings are given" in err
    assert "hunter2" not in err and "Traceback" not in err


def test_error_lines_name_entries_and_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = refused(monkeypatch, KAIROS_POLICY__TRIGGER_THRESHOLDS='{"in_session": 3}')
    assert lines == ["KAIROS_POLICY__TRIGGER_THRESHOLDS: threshold of in_session must lie in [0, 1], got 3.0"]
    lines = refused(monkeypatch, KAIROS_POLICY__TRIGGER_THRESHOLDS="{}", KAIROS_POLICY__MIN_THRESHOLD="0.99")
    assert lines == ["KAIROS_POLICY__*: min_threshold must not exceed max_threshold"]
