"""Settings of the push decision policy (read through ``Settings.policy``, env ``KAIROS_POLICY__*``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PolicyConfig(BaseModel):
    """Every push rule is configurable; defaults are conservative."""

    threshold: float = Field(0.5, description="Interest (calibrated probability) a candidate must reach to be pushed.")
    min_gap_seconds: float = Field(3600.0, description="At most one push per user per this many seconds.")
    item_repeat_window_seconds: float = Field(
        7 * 86400.0, description="Never push the same item to the same user twice within this window."
    )
    push_ttl_seconds: float = Field(3600.0, description="A push expires this long after it is created.")
