"""The push's collapse key: a delivery system replaces an undelivered older push with the same key."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize("field", ["{user_id:>99999999}", "{user_id!r}", "{user_id[0]}", "{item_id.upper}"])
def test_a_placeholder_with_a_format_spec_conversion_index_or_attribute_is_refused(field: str) -> None:
    # {user_id:>99999999} would build a 100 MB string for every push before it is digested.
    with pytest.raises(ValidationError, match="each plain"):
        config(collapse_key_template=f"kairos-{field}")


def test_literal_braces_are_kept() -> None:
    assert config(collapse_key_template="{{k}}-{user_id}").collapse_key_template == "{{k}}-{user_id}"


@pytest.mark.parametrize(
    ("user_id", "template", "category"),
    [
        ("f" * 64, "kairos-{user_id}", "shoes"),  # a SHA-256 pseudonym: 71 bytes, past APNs' 64
        ("\u00fcser\u202e", "kairos-{user_id}", "shoes"),  # non-ASCII, a bidi override
        ("u1", "{user_id}/{category}", "Shoes\r\napns-priority: 10"),  # would split the HTTP header
        ("u1", "{user_id}/{category}", "Men's shoes"),  # a space
        ("u1", "{category}", None),  # empty
    ],
)
def test_a_key_that_would_not_fit_a_header_is_sent_as_its_digest(
    user_id: str, template: str, category: str | None
) -> None:
    ok = Verdict("emit", "ok")
    cfg = config(collapse_key_template=template)
    push = build_push(user_id, candidate("i1", category=category), ok, T0, cfg, "m1")
    key = push.collapse_key
    assert key is not None and re.fullmatch(r"kairos-[0-9a-f]{32}", key)
    # Deterministic, and the template's grouping holds: the same key for another item of the user.
    again = build_push(user_id, candidate("i2", category=category), ok, T0 + 60, cfg, "m1")
    assert again.collapse_key == key
    other = build_push(user_id + "x", candidate("i1", category=category), ok, T0, cfg, "m1")
    assert (other.collapse_key != key) == ("{user_id}" in template)


def test_a_key_of_64_visible_ascii_characters_is_sent_as_is() -> None:
    push = build_push("u" * 57, candidate("i1"), Verdict("emit", "ok"), T0, config(), "m1")
    assert push.collapse_key == "kairos-" + "u" * 57


def test_every_placeholder_the_settings_accept_is_filled_when_a_push_is_built() -> None:
    # The settings' list of placeholders and the values collapse_key passes are two lists: in step.
    from stream.policy_config.push_rules import _COLLAPSE_FIELDS

    template = "-".join("{" + name + "}" for name in _COLLAPSE_FIELDS)
    push = build_push(
        "u1",
        candidate("i1", category="c"),
        Verdict("emit", "ok"),
        T0,
        config(collapse_key_template=template),
        "m1",
    )
    assert push.collapse_key is not None and "{" not in push.collapse_key
