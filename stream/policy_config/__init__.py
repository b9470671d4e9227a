"""Settings of the push decision policy (read through ``Settings.policy``, env ``KAIROS_POLICY__*``).

Every field has a default and a one-line description; ``docs/policy.md`` explains each rule. Dict
fields are read from the environment as JSON (``KAIROS_POLICY__TRIGGER_THRESHOLDS='{"price_drop": 0.4}'``).

The fields are declared by group, one module each: the rules a candidate must pass
(:mod:`.push_rules`), where candidates come from (:mod:`.candidates`), the timers (:mod:`.timers`),
and what is learnt from answers (:mod:`.learning`). They make one flat model, so every variable stays
``KAIROS_POLICY__<FIELD>``.
"""

from __future__ import annotations

from pydantic import ConfigDict

from stream.policy_config.candidates import CandidatesConfig
from stream.policy_config.learning import LearningConfig
from stream.policy_config.push_rules import PushRulesConfig
from stream.policy_config.timers import TimersConfig


# pydantic lists the fields of the last base first: this order keeps the fields, and docs/settings.md,
# in the order push rules, candidates, timers, learning.
class PolicyConfig(LearningConfig, TimersConfig, CandidatesConfig, PushRulesConfig):
    """Every push rule is configurable; defaults are conservative."""

    # NaN made a rule's comparison false (min_gap_seconds, item_repeat_window_seconds silently off);
    # an infinite threshold, weight or time to live crashed the push's validation mid-stream.
    model_config = ConfigDict(allow_inf_nan=False)
