"""docs/policy.md documents every suppression reason; docs/settings.md (generated) every config field."""

from __future__ import annotations

from pathlib import Path

from stream.policy import SUPPRESSION_REASONS
from stream.policy_config import PolicyConfig

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_every_field_and_reason_is_documented():
    settings = (DOCS / "settings.md").read_text(encoding="utf-8")
    missing = [n for n in PolicyConfig.model_fields if f"`KAIROS_POLICY__{n.upper()}`" not in settings]
    assert missing == []
    policy = (DOCS / "policy.md").read_text(encoding="utf-8")
    assert [code for code in SUPPRESSION_REASONS if f"`{code}`" not in policy] == []


def test_every_field_has_a_description():
    assert [n for n, f in PolicyConfig.model_fields.items() if not f.description] == []
