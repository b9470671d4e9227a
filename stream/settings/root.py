"""The one settings object, :class:`Settings`, made of the groups, and the process-wide instance."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import (
    Field,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.policy_config import PolicyConfig
from stream.settings.console import ConsoleConfig
from stream.settings.kafka import CHANGELOG_SUFFIX, TOPIC_FIELDS, KafkaConfig, TopicsConfig
from stream.settings.paths import PROJECT_ROOT
from stream.settings.worker import LogConfig, ModelConfig, WorkerConfig


class Settings(BaseSettings):
    """All of Kairos's configuration. Read from ``KAIROS_*`` environment variables and ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="KAIROS_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # errors must not echo secrets (SASL and key passwords)
        # No setting means anything as NaN or an infinity: NaN made every comparison false (a rule or
        # health check silently off), an infinity crashed a push's validation or a timer.
        allow_inf_nan=False,
    )

    data_dir: Path = Field(
        PROJECT_ROOT.parent / "shared" / "data",
        description="Folder with the public session datasets (never committed to the project).",
    )
    demo_seconds: float | None = Field(None, description="Stop `kairos demo` after this many seconds.")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

    @model_validator(mode="after")
    def _changelog_is_its_own_topic(self) -> Settings:
        changelog = self.worker.app_id + CHANGELOG_SUFFIX
        for name in TOPIC_FIELDS:
            if getattr(self.topics, name) == changelog:
                raise ValueError(
                    f"KAIROS_TOPICS__{name.upper()} is {changelog!r}, the user-state changelog of "
                    "KAIROS_WORKER__APP_ID: every topic needs its own name"
                )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
