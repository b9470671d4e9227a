"""Kairos's topics: names, partition counts and configs, and their creation on the broker.

User-keyed topics (events, consent, pushes, decisions) share one partition count so that a user's
events, consent and pushes live on the same partition number. Catalog and consent are compacted: the
latest value per key is the truth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, NewTopic

from stream.settings import CHANGELOG_SUFFIX, Settings

log = logging.getLogger(__name__)

COMPACT = {"cleanup.policy": "compact"}
# The catalog keeps a day of superseded versions uncompacted: a restarted worker reads an item's
# change with the version before it, and announces it when the change came after a partition's stored
# announced-until (a change whose earlier version is compacted away reads as a first version, which
# announces nothing). A day, as the engine's catalog retention (stream.catalog_view).
CATALOG = {**COMPACT, "min.compaction.lag.ms": "86400000"}


@dataclass(frozen=True)
class TopicSpec:
    """A topic Kairos needs."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def changelog_topic(settings: Settings) -> str:
    """The compacted topic that backs the user state store (one partition per events partition)."""
    return f"{settings.worker.app_id}{CHANGELOG_SUFFIX}"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes."""
    t = settings.topics
    return [
        TopicSpec(changelog_topic(settings), t.partitions, COMPACT),
        TopicSpec(t.events, t.partitions),
        TopicSpec(t.consent, t.partitions, COMPACT),
        TopicSpec(t.pushes, t.partitions),
        TopicSpec(t.decisions, t.partitions),
        TopicSpec(t.catalog, 1, CATALOG),
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


class TopicLayoutError(RuntimeError):
    """The broker's topics cannot serve Kairos (user-keyed topics with different partition counts)."""


def user_keyed_topics(settings: Settings) -> list[str]:
    """Topics keyed by user whose partition ``p`` must hold the same users as ``events``' partition ``p``."""
    t = settings.topics
    return [t.events, t.consent, changelog_topic(settings), t.pushes]


def check_partitions(settings: Settings, timeout: float = 15.0) -> dict[str, int]:
    """Refuse a layout where a user's events, consent, state and pushes would live on different
    partition numbers, or on another count than ``topics.partitions``; returns the partition count of
    every user-keyed topic.

    The worker reads ``consent`` partition ``p`` with ``events`` partition ``p``, restores state from
    changelog partition ``p`` and reconciles pushes from pushes partition ``p``: with different
    counts, a user's consent would be applied by a worker that does not hold their state.
    """
    admin = AdminClient(settings.kafka.confluent_config())
    topics = admin.list_topics(timeout=timeout).topics
    counts: dict[str, int] = {}
    missing = []
    for name in user_keyed_topics(settings):
        meta = topics.get(name)
        if meta is None or meta.error is not None:
            missing.append(name)
        else:
            counts[name] = len(meta.partitions)
    if missing:
        raise TopicLayoutError(f"topics missing on the broker: {', '.join(missing)}")
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{name}={n}" for name, n in counts.items())
        raise TopicLayoutError(
            f"user-keyed topics must have the same number of partitions, found {shown}; "
            "repartitioning needs a migration (new topics, replay), see docs/operations.md"
        )
    # Admission places a user with KAIROS_TOPICS__PARTITIONS: another count on the broker would have
    # every event that lands elsewhere dead-lettered as wrong_partition.
    found = next(iter(counts.values()))
    if found != settings.topics.partitions:
        raise TopicLayoutError(
            f"KAIROS_TOPICS__PARTITIONS={settings.topics.partitions} but the user-keyed topics have "
            f"{found} partitions on the broker; set it to {found} (repartitioning needs a migration, "
            "see docs/operations.md)"
        )
    return counts
