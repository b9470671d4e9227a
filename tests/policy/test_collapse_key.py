"""The push's collapse key: a delivery system replaces an undelivered older push with the same key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stream.policy import Verdict, build_push
from tests.policy.conftest import T0, candidate, config


def test_default_key_is_per_user_and_the_template_is_configurable() -> None:
    ok = Verdict("emit", "ok")
    push = build_push("u1", candidate("i1"), ok, T0, config(), "m1")
    assert push.collapse_key == "kairos-u1"
    push = build_push(
        "u1", candidate("i7"), ok, T0, config(collapse_key_template="{user_id}/{item_id}"), "m1"
    )
    assert push.collapse_key == "u1/i7"
    assert (
        build_push("u1", candidate("i1"), ok, T0, config(collapse_key_template=""), "m1").collapse_key is None
    )


def test_an_unknown_placeholder_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="collapse_key_template"):
        config(collapse_key_template="{user}")
