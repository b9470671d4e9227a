"""Kairos's topics: names, partition counts and configs, and their creation on the broker.

User-keyed topics (events, consent, pushes, decisions) share one partition count so that a user's
events, consent and pushes live on the same partition number. Catalog and consent are compacted: the
latest value per key is the truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, NewTopic

from stream.settings import Settings

log = logging.getLogger(__name__)

COMPACT = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class TopicSpec:
    """A topic Kairos needs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def changelog_topic(settings: Settings) -> str:
    """The compacted topic that backs the user state store (one partition per events partition)."""
    return f"{settings.worker.app_id}-user-state-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes."""
    t = settings.topics
    return [
        TopicSpec(changelog_topic(settings), t.partitions, COMPACT),
        TopicSpec(t.events, t.partitions),
        TopicSpec(t.consent, t.partitions, COMPACT),
        TopicSpec(t.pushes, t.partitions),
        TopicSpec(t.decisions, t.partitions),
        TopicSpec(t.catalog, 1, COMPACT),
        TopicSpec(t.dead_letters, 1),
    ]


def ensure_topics(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left as they are."""
    admin = AdminClient(settings.kafka.confluent_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [s for s in topic_specs(settings) if s.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=settings.topics.replication_factor,
                config=s.config,
            )
            for s in wanted
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except Exception as exc:  # noqa: BLE001 - a racing creator is fine, anything else is re-raised
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    log.info("created topics %s", created)
    return created
