"""The marketing console's settings: ``KAIROS_CONSOLE__*`` (part of :class:`stream.settings.Settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)


class ConsoleConfig(BaseModel):
    """The live page for marketing (``kairos console``; docs/console.md)."""

    model_config = ConfigDict(allow_inf_nan=False)  # see Settings

    host: str = Field(
        "127.0.0.1",
        description="Address the console page is served on (loopback by default; empty: every interface).",
    )
    port: int = Field(8010, ge=0, le=65535, description="Port of the console page (0 picks a free one).")
    start: Literal["latest", "earliest"] = Field(
        "latest", description="Where the console starts reading the topics: 'latest' (now on) or 'earliest'."
    )
    window: int = Field(
        500,
        ge=1,
        le=100_000,
        description="Recent pushes, decisions and dead letters kept and shown (the only user data held).",
    )
    attribution_pushes: int = Field(
        20_000, ge=1, description="Recent pushes remembered (digests) to attribute opens, clicks, purchases."
    )
    update_seconds: float = Field(
        0.5, gt=0.0, le=3600.0, description="How often an open page is sent what changed (at most 3600)."
    )
    max_clients: int = Field(8, ge=1, description="Most pages open at once; more are refused (503).")
    dead_letters: bool = Field(True, description="Also read the dead-letter topic and show refused inputs.")
