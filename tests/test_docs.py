"""The generated documentation stays in step with the code."""

from __future__ import annotations

from pathlib import Path

from stream.settings import settings_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_settings_doc_is_current() -> None:
    doc = (ROOT / "docs" / "settings.md").read_text()
    hint = "regenerate it: kairos settings --markdown > docs/settings.md"
    assert doc.strip() == settings_markdown().strip(), hint


def test_every_setting_has_a_description() -> None:
    assert "|  |" not in settings_markdown()
