"""One typed settings object for the whole of Kairos.

Every option has a default, an environment variable and a line of documentation. Nested groups
are read with a double underscore: ``KAIROS_KAFKA__BOOTSTRAP_SERVERS``, ``KAIROS_POLICY__MIN_GAP_SECONDS``.
``kairos settings`` prints the effective values (secrets masked) and ``docs/settings.md`` lists them all.

The object is :class:`Settings` (:mod:`.root`); its groups are declared one module each: the broker and
topics (:mod:`.kafka`), the worker, its model and logs (:mod:`.worker`), the console (:mod:`.console`),
and the policy (:mod:`stream.policy_config`). :mod:`.variables` names them as environment variables
(errors, unknown names, the markdown list).
"""

from __future__ import annotations

from stream.settings.console import ConsoleConfig
from stream.settings.kafka import (
    CHANGELOG_SUFFIX,
    TOPIC_FIELDS,
    TOPIC_NAME_RULE,
    KafkaConfig,
    TopicsConfig,
    check_topic_name,
)
from stream.settings.paths import PROJECT_ROOT
from stream.settings.root import Settings, get_settings
from stream.settings.variables import (
    NOT_SETTINGS,
    setting_variables,
    settings_errors,
    settings_markdown,
    settings_parse_errors,
    unknown_variables,
    warn_unknown_variables,
)
from stream.settings.worker import LogConfig, ModelConfig, WorkerConfig

__all__ = [
    "CHANGELOG_SUFFIX",
    "NOT_SETTINGS",
    "PROJECT_ROOT",
    "TOPIC_FIELDS",
    "TOPIC_NAME_RULE",
    "ConsoleConfig",
    "KafkaConfig",
    "LogConfig",
    "ModelConfig",
    "Settings",
    "TopicsConfig",
    "WorkerConfig",
    "check_topic_name",
    "get_settings",
    "setting_variables",
    "settings_errors",
    "settings_markdown",
    "settings_parse_errors",
    "unknown_variables",
    "warn_unknown_variables",
]
