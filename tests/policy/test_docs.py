"""docs/policy.md documents every config field, its env var and every suppression reason."""

from __future__ import annotations

from pathlib import Path

from stream.policy import SUPPRESSION_REASONS
from stream.policy_config import PolicyConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "policy.md"


def test_every_field_and_reason_is_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = [name for name in PolicyConfig.model_fields if f"`KAIROS_POLICY__{name.upper()}`" not in text]
    assert missing == []
    assert [code for code in SUPPRESSION_REASONS if f"`{code}`" not in text] == []


def test_every_field_has_a_description():
    assert [n for n, f in PolicyConfig.model_fields.items() if not f.description] == []
