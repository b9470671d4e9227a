"""Settings the worker cannot run with are refused when they are read, named by their variable.

Each value refused here used to be accepted and then crash, loop or silently switch something off in
the middle of the stream; the edges that still make sense are accepted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from stream.cli import EXIT_CONFIG, main
from stream.policy_config import PolicyConfig
from stream.send_time import observe_stored
from stream.settings import Settings, settings_errors, unknown_variables
from stream.state import UserState

ROOT = Path(__file__).resolve().parents[2]


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """The settings with ``env`` (variable name -> value) set for this call only."""
    with monkeypatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    """The lines naming what ``Settings()`` refused with ``env`` set (it must refuse)."""
    with pytest.raises(ValidationError) as info:
        load(monkeypatch, **env)
    return settings_errors(info.value)


def test_a_refused_setting_is_named_by_its_variable_and_stops_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAIROS_POLICY__MAX_PUSHES_PER_24H", "-5")
    monkeypatch.setenv("KAIROS_KAFKA__SASL_PASSWORD", "hunter2")  # refused too, and never echoed
    assert main(["settings"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "kairos settings: invalid settings" in err
    assert "KAIROS_POLICY__MAX_PUSHES_PER_24H: Input should be greater than or equal to 0" in err
    assert "KAIROS_KAFKA__*: SASL settings are given" in err
    assert "hunter2" not in err and "Traceback" not in err


def test_a_dict_option_that_is_not_json_stops_the_command_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # pydantic-settings raises SettingsError, not a ValidationError, for a value it cannot decode:
    # it was a traceback naming only the group ("policy").
    monkeypatch.setenv("KAIROS_POLICY__TRIGGER_THRESHOLDS", '{"cart_abandonment": 0.1')
    assert main(["settings"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith(
        "kairos settings: invalid settings:\n  KAIROS_POLICY__TRIGGER_THRESHOLDS: not a JSON"
    )
    assert "cart_abandonment" not in err and "Traceback" not in err


def test_error_lines_name_entries_and_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = refused(monkeypatch, KAIROS_POLICY__TRIGGER_THRESHOLDS='{"in_session": 3}')
    assert lines == ["KAIROS_POLICY__TRIGGER_THRESHOLDS: threshold of in_session must lie in [0, 1], got 3.0"]
    lines = refused(monkeypatch, KAIROS_POLICY__MIN_THRESHOLD="0.99")
    assert lines == ["KAIROS_POLICY__*: min_threshold must not exceed max_threshold"]


@pytest.mark.parametrize(
    "variable",
    [
        "KAIROS_POLICY__MIN_GAP_SECONDS",  # NaN: the rule's comparison was always false (no gap)
        "KAIROS_POLICY__ITEM_REPEAT_WINDOW_SECONDS",  # NaN: the same item pushed again at once
        "KAIROS_POLICY__PROMOTION_WEIGHT",  # inf: the push failed validation mid-stream
        "KAIROS_WORKER__LOOP_STALL_SECONDS",  # NaN: /healthz never failed
        "KAIROS_WORKER__MAX_EVENT_LAG_SECONDS",
        "KAIROS_KAFKA__SESSION_TIMEOUT_SECONDS",  # int(nan * 1000) at the group join
        "KAIROS_MODEL__RELOAD_CHECK_SECONDS",
        "KAIROS_CONSOLE__UPDATE_SECONDS",
        "KAIROS_DEMO_SECONDS",
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_nan_and_infinities_are_refused_in_every_number(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    (line,) = refused(monkeypatch, **{variable: value})
    assert line.startswith(f"{variable}: Input should be a finite number")


def test_nan_and_infinities_are_refused_in_per_trigger_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    # An infinite time to live made the push's expires_at invalid when it was emitted.
    (line,) = refused(monkeypatch, KAIROS_POLICY__TRIGGER_TTL_SECONDS='{"cart_abandonment": 1e400}')
    assert line.startswith("KAIROS_POLICY__TRIGGER_TTL_SECONDS[cart_abandonment]: Input should be a finite")
    assert load(monkeypatch, KAIROS_POLICY__TRIGGER_TTL_SECONDS='{"cart_abandonment": 1e9}')


def test_partitions_and_replication_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0 partitions divided by zero at the first event; -1 put every user on partition 0, whose
    # events the worker then refused as wrong_partition on every other partition.
    for value in ("0", "-1"):
        (line,) = refused(monkeypatch, KAIROS_TOPICS__PARTITIONS=value)
        assert line == "KAIROS_TOPICS__PARTITIONS: Input should be greater than or equal to 1"
    assert load(monkeypatch, KAIROS_TOPICS__PARTITIONS="1").topics.partitions == 1
    # A replication factor of 0 (or below -1) is refused by every broker when the topics are made.
    for value in ("0", "-2"):
        (line,) = refused(monkeypatch, KAIROS_TOPICS__REPLICATION_FACTOR=value)
        assert line.startswith(
            "KAIROS_TOPICS__REPLICATION_FACTOR: must be -1 (the broker's default) or at least 1"
        )
    for value in ("-1", "1", "3"):
        assert load(monkeypatch, KAIROS_TOPICS__REPLICATION_FACTOR=value).topics.replication_factor == int(
            value
        )


class _Meta:
    def __init__(self, partitions: int) -> None:
        self.partitions = dict.fromkeys(range(partitions))
        self.error = None


def test_the_worker_refuses_a_partition_count_the_topics_do_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    # The topics have 4 partitions, the settings said 8: admission placed users with 8, so every
    # event whose user hashes elsewhere was dead-lettered as wrong_partition.
    from stream import topics

    settings = load(
        monkeypatch, KAIROS_KAFKA__BOOTSTRAP_SERVERS="localhost:9092", KAIROS_TOPICS__PARTITIONS="8"
    )

    class Admin:
        def __init__(self, config: dict[str, object]) -> None:
            pass

        def list_topics(self, timeout: float) -> object:
            metas = {name: _Meta(4) for name in topics.user_keyed_topics(settings)}
            return type("Metadata", (), {"topics": metas})()

    monkeypatch.setattr(topics, "AdminClient", Admin)
    with pytest.raises(topics.TopicLayoutError, match="KAIROS_TOPICS__PARTITIONS=8 but .* have 4 partitions"):
        topics.check_partitions(settings)
    settings.topics.partitions = 4
    assert set(topics.check_partitions(settings).values()) == {4}


@pytest.mark.parametrize("name", ["", " ", "a b", "events ", "x" * 250, ".", "..", "événements", "a/b"])
def test_topic_names_a_broker_refuses_are_refused(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    (line,) = refused(monkeypatch, KAIROS_TOPICS__PUSHES=name)
    assert line.startswith("KAIROS_TOPICS__PUSHES: ") and "is not a Kafka topic name" in line


def test_topic_names_kafka_accepts_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(monkeypatch, KAIROS_TOPICS__EVENTS="shop.events_v2-eu", KAIROS_TOPICS__CATALOG="c" * 249)
    assert settings.topics.events == "shop.events_v2-eu" and len(settings.topics.catalog) == 249


def test_every_topic_needs_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dead letters on the events topic were read back as events and dead-lettered again, forever;
    # consent on the events topic was dead-lettered, so opt-outs were never applied.
    (line,) = refused(monkeypatch, KAIROS_TOPICS__DEAD_LETTERS="events")
    assert line == (
        "KAIROS_TOPICS__*: KAIROS_TOPICS__EVENTS and KAIROS_TOPICS__DEAD_LETTERS are both 'events': "
        "every topic needs its own name"
    )
    (line,) = refused(
        monkeypatch, KAIROS_TOPICS__DEAD_LETTERS="dead-letters", KAIROS_TOPICS__CONSENT="events"
    )
    assert "KAIROS_TOPICS__EVENTS and KAIROS_TOPICS__CONSENT" in line
    # ... nor the user-state changelog, which is named after the application id.
    (line,) = refused(
        monkeypatch, KAIROS_TOPICS__CONSENT="shop-user-state-changelog", KAIROS_WORKER__APP_ID="shop"
    )
    assert line.startswith("KAIROS_*: KAIROS_TOPICS__CONSENT is 'shop-user-state-changelog', the user-state")


@pytest.mark.parametrize("app_id", ["", " ", "a b", "..", ".", "a/b", "x" * 229])
def test_application_ids_that_cannot_name_the_group_changelog_and_folder_are_refused(
    monkeypatch: pytest.MonkeyPatch, app_id: str
) -> None:
    # An empty group id aborted the worker inside librdkafka (an assertion, no message); a space made
    # the changelog's name one the broker refuses; '..' put the state in state_dir's parent.
    (line,) = refused(monkeypatch, KAIROS_WORKER__APP_ID=app_id)
    assert line.startswith("KAIROS_WORKER__APP_ID: ") and "cannot name the group, the changelog topic" in line


def test_application_ids_that_can_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for app_id in ("b", "kairos-bench_2.eu", "x" * 228):
        assert load(monkeypatch, KAIROS_WORKER__APP_ID=app_id).worker.app_id == app_id


def test_a_short_covisitation_half_life_survives_a_quiet_night() -> None:
    # With covisit_half_life_seconds=60, 20 hours without events on a partition rescaled every count
    # to 0.0 (2 ** -1200 underflows) and the next diversity check divided 0 by 0 mid-stream.
    from stream.covisitation import CoVisitationIndex, snapshot_similarity

    index = CoVisitationIndex(half_life_seconds=60.0)
    index.observe("a", ["b"], 1.7e9)
    assert index.similarity("a", "b") == 1.0
    index.observe("c", ["d"], 1.7e9 + 20 * 3600)
    assert index.similarity("a", "b") == 0.0
    assert snapshot_similarity(index.snapshot(["a"]), "a", "b") == 0.0
    assert index.similarity("c", "d") == 1.0


def test_the_threshold_is_a_probability(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2.0 ("never push") was clamped to max_threshold and pushed anyway; -1 to min_threshold.
    for value in ("2", "-1", "1.0001"):
        (line,) = refused(monkeypatch, KAIROS_POLICY__THRESHOLD=value)
        assert line.startswith("KAIROS_POLICY__THRESHOLD: Input should be")
    for value in ("0", "0.12", "1"):
        assert load(monkeypatch, KAIROS_POLICY__THRESHOLD=value).policy.threshold == float(value)


def test_redeliveries_are_always_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0 remembered no event id, so a redelivered event was applied (stepped, counted) twice; -1
    # raised IndexError (pop from an empty deque) at the user's first event.
    for value in ("0", "-1"):
        (line,) = refused(monkeypatch, KAIROS_WORKER__DEDUPE_EVENT_IDS=value)
        assert line == "KAIROS_WORKER__DEDUPE_EVENT_IDS: Input should be greater than or equal to 1"
    from tests.stream.fakes import T0, DictState, ev, make_engine, make_settings

    engine, store = make_engine(make_settings(worker={"dedupe_event_ids": 1})), DictState()
    event = ev("e1", "u1", "view", "i1", T0)
    engine.process([event], store)
    out = engine.process([event], store)
    assert out.events[("view", "duplicate")] == 1 and store.user("u1").n_events == 1


def test_the_batch_size_is_one_the_reader_can_ask_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # Above 1,000,000 every read of the bulk reader raised ValueError in librdkafka's consume()
    # (num_messages must be between 0 and 1000000) once a record had arrived; 0 read one at a time.
    for value in ("0", "-1", "1000001"):
        (line,) = refused(monkeypatch, KAIROS_WORKER__BATCH_SIZE=value)
        assert line.startswith("KAIROS_WORKER__BATCH_SIZE: Input should be")
    for value in ("1", "1000000"):
        assert load(monkeypatch, KAIROS_WORKER__BATCH_SIZE=value).worker.batch_size == int(value)


def test_the_broker_probe_comes_within_the_broker_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # An idle worker hears from the broker only through the probe: probing every 60 s with a 30 s
    # timeout turned it unready for half of every minute.
    (line,) = refused(monkeypatch, KAIROS_WORKER__BROKER_PROBE_SECONDS="60")
    assert line.startswith("KAIROS_WORKER__*: KAIROS_WORKER__BROKER_PROBE_SECONDS (60) must be less than")
    refused(monkeypatch, KAIROS_WORKER__BROKER_PROBE_SECONDS="30")
    settings = load(
        monkeypatch, KAIROS_WORKER__BROKER_PROBE_SECONDS="1", KAIROS_WORKER__BROKER_TIMEOUT_SECONDS="4"
    )
    assert (settings.worker.broker_probe_seconds, settings.worker.broker_timeout_seconds) == (1.0, 4.0)


@pytest.mark.parametrize(
    ("variable", "values"),
    [
        # 0 made the client's socket non-blocking, a negative value or 1e300 raised in settimeout: the
        # server closed every connection whose request was not already there, so probes failed.
        ("KAIROS_WORKER__WEB_SOCKET_TIMEOUT_SECONDS", ("0", "-1", "3600.5", "1e300")),
        # 0 or less: /healthz (or /readyz) failed all the time, so the orchestrator restarted the worker.
        ("KAIROS_WORKER__LOOP_STALL_SECONDS", ("0", "-1")),
        ("KAIROS_WORKER__CONSUME_STALL_SECONDS", ("0", "-1")),
        ("KAIROS_WORKER__BROKER_TIMEOUT_SECONDS", ("0", "-1")),
        # 0 or less: the probe thread pinged the broker back to back (Event.wait(0)); past
        # threading.TIMEOUT_MAX (1e10) Event.wait raised OverflowError and the probe thread died.
        # A day is the most accepted (readiness needs a probe within the broker timeout anyway).
        ("KAIROS_WORKER__BROKER_PROBE_SECONDS", ("0", "-1", "86401")),
        # 0 or less: the periodic tick (timers, catalog, expiry sweep) ran back to back on the loop.
        ("KAIROS_WORKER__TICK_SECONDS", ("0", "-1")),
        # 0 or less: a failing recovery was retried back to back (the doubling of 0 stays 0).
        ("KAIROS_WORKER__RECOVERY_RETRY_SECONDS", ("0", "-1")),
        # faust reads a wait of 0 as "no limit": events waited until a whole batch had arrived.
        ("KAIROS_WORKER__BATCH_WAIT_SECONDS", ("0", "-1")),
    ],
)
def test_health_timeouts_and_loop_intervals_are_positive(
    monkeypatch: pytest.MonkeyPatch, variable: str, values: tuple[str]
) -> None:
    for value in values:
        (line,) = refused(monkeypatch, **{variable: value})
        assert line.startswith(f"{variable}: Input should be")


def test_recovery_retry_waits_are_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = refused(monkeypatch, KAIROS_WORKER__RECOVERY_RETRY_SECONDS="60")
    assert line == (
        "KAIROS_WORKER__*: KAIROS_WORKER__RECOVERY_RETRY_MAX_SECONDS (30) must be at least "
        "KAIROS_WORKER__RECOVERY_RETRY_SECONDS (60)"
    )
    settings = load(
        monkeypatch,
        KAIROS_WORKER__RECOVERY_RETRY_SECONDS="60",
        KAIROS_WORKER__RECOVERY_RETRY_MAX_SECONDS="60",
    )
    assert settings.worker.recovery_retry_max_seconds == settings.worker.recovery_retry_seconds == 60.0


def test_the_input_size_limit_leaves_room_for_well_formed_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0, a negative value or a few bytes dead-lettered every event, consent and catalog update as
    # oversized: the worker ran and did nothing else (3,397 dead letters, no push, on the simulated shop).
    for value in ("0", "-1", "100", "1023"):
        (line,) = refused(monkeypatch, KAIROS_WORKER__MAX_EVENT_BYTES=value)
        assert line == "KAIROS_WORKER__MAX_EVENT_BYTES: Input should be greater than or equal to 1024"
    assert load(monkeypatch, KAIROS_WORKER__MAX_EVENT_BYTES="1024").worker.max_event_bytes == 1024


def test_the_bulk_readers_librdkafka_settings_are_in_librdkafkas_ranges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past librdkafka's ranges the bulk reader's consumer could not be made at start ("Configuration
    # property fetch.wait.max.ms value 1000000000 is outside allowed range 0..300000"): the app crashed.
    for variable, value in (
        ("KAIROS_KAFKA__FETCH_MAX_WAIT_MS", "300001"),
        ("KAIROS_KAFKA__INPUT_PREFETCH_MESSAGES", "10000001"),
        ("KAIROS_KAFKA__INPUT_FETCH_BACKOFF_MS", "300001"),
    ):
        (line,) = refused(monkeypatch, **{variable: value})
        assert line.startswith(f"{variable}: Input should be less than or equal to")
    from stream.bulk_input import BulkReader

    settings = load(
        monkeypatch,
        KAIROS_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",  # never reached: no read
        KAIROS_KAFKA__FETCH_MAX_WAIT_MS="300000",
        KAIROS_KAFKA__INPUT_PREFETCH_MESSAGES="10000000",
        KAIROS_KAFKA__INPUT_FETCH_BACKOFF_MS="300000",
    )
    BulkReader(settings).close()  # the largest accepted values make a consumer


def test_group_session_and_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    # A heartbeat of 0 (or less) made aiokafka heartbeat back to back; a session timeout of 0 or
    # less could not join a group, and one past 3600 s is refused by librdkafka (kairos simulate).
    for variable, values in (
        ("KAIROS_KAFKA__SESSION_TIMEOUT_SECONDS", ("0", "-1", "3601")),
        ("KAIROS_KAFKA__HEARTBEAT_INTERVAL_SECONDS", ("0", "-1")),
    ):
        for value in values:
            (line,) = refused(monkeypatch, **{variable: value})
            assert line.startswith(f"{variable}: Input should be")
    # A heartbeat not within the session: the group dropped the member between heartbeats (rebalances).
    (line,) = refused(monkeypatch, KAIROS_KAFKA__HEARTBEAT_INTERVAL_SECONDS="10")
    assert line.startswith("KAIROS_KAFKA__*: KAIROS_KAFKA__HEARTBEAT_INTERVAL_SECONDS (10) must be less than")
    settings = load(
        monkeypatch, KAIROS_KAFKA__SESSION_TIMEOUT_SECONDS="45", KAIROS_KAFKA__HEARTBEAT_INTERVAL_SECONDS="3"
    )
    assert (settings.kafka.session_timeout_seconds, settings.kafka.heartbeat_interval_seconds) == (45.0, 3.0)
    # The longest accepted session still makes kairos simulate's consumer (librdkafka refused one past
    # its max.poll.interval.ms of 300 s: "`max.poll.interval.ms` must be >= `session.timeout.ms`").
    from stream.sim_runner import ShopSimulator
    from stream.simulator import SimConfig

    settings = load(
        monkeypatch,
        KAIROS_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",  # never reached: no read
        KAIROS_KAFKA__SESSION_TIMEOUT_SECONDS="3600",
    )
    ShopSimulator(settings, SimConfig(), create_topics=False)._make_consumer().close()


def test_ports_are_tcp_ports(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # -1 or 65536 failed only when a server bound its socket: the worker's app crashed after it had
    # joined the group (OverflowError: port must be 0-65535); the embedded broker was waited for 15 s
    # and did not start ("Tansu did not accept connections on 127.0.0.1:-1").
    for variable in ("KAIROS_WORKER__WEB_PORT", "KAIROS_KAFKA__EMBEDDED_PORT"):
        for value in ("-1", "65536"):
            (line,) = refused(monkeypatch, **{variable: value})
            assert line.startswith(f"{variable}: Input should be")
        assert load(monkeypatch, **{variable: "65535"})
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--web-port", "-1"])
    assert exit_info.value.code == 2 and "--web-port must be 0-65535, got -1" in capsys.readouterr().err


def observe_hour(state: UserState, ts: float, policy: PolicyConfig) -> None:
    """Count an open at ``ts`` in the user's engagement hours, at the policy's weight and half-life."""
    state.policy.send_hours = observe_stored(
        state.policy.send_hours,
        ts,
        ZoneInfo("UTC"),
        policy.send_time_open_weight,
        policy.send_time_half_life_seconds,
    )


def test_the_send_time_open_weight_keeps_the_stored_hours_encodable(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1e300 (or anything near 2 ** 64) made a shopper's engagement hour a whole number past msgpack's
    # integers: the user's state could not be encoded at the first push open (OverflowError mid-stream).
    (line,) = refused(monkeypatch, KAIROS_POLICY__SEND_TIME_OPEN_WEIGHT="1e300")
    assert line == "KAIROS_POLICY__SEND_TIME_OPEN_WEIGHT: Input should be less than or equal to 1000000"
    policy = load(monkeypatch, KAIROS_POLICY__SEND_TIME_OPEN_WEIGHT="1000000").policy
    state = UserState()
    for k in range(1000):  # a thousand opens at the largest accepted weight still encode
        ts = 1.7e9 + k * 3600.0
        observe_hour(state, ts, policy)
    assert UserState.from_bytes(state.to_bytes()).policy.send_hours == state.policy.send_hours


def test_sasl_credentials_may_not_be_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty user or password was accepted as given, and the first Kafka client made at start
    # failed a bare assert in librdkafka_security (or, under python -O, sent empty credentials); a
    # blank user passed it and failed the broker's authentication.
    sasl = {"KAIROS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAIROS_KAFKA__SASL_MECHANISM": "PLAIN"}
    (line,) = refused(monkeypatch, **sasl, KAIROS_KAFKA__SASL_USERNAME=" ", KAIROS_KAFKA__SASL_PASSWORD="")
    assert line == (
        "KAIROS_KAFKA__*: security_protocol=SASL_PLAINTEXT needs KAIROS_KAFKA__SASL_USERNAME, "
        "KAIROS_KAFKA__SASL_PASSWORD"
    )
    settings = load(
        monkeypatch, **sasl, KAIROS_KAFKA__SASL_USERNAME="kairos", KAIROS_KAFKA__SASL_PASSWORD=" x "
    )
    from stream.security import librdkafka_security

    assert librdkafka_security(settings.kafka)["sasl.password"] == " x "


def test_the_state_folder_is_not_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A file there was accepted; kairos worker started the broker, made the topics and then failed
    # with NotADirectoryError making <state_dir>/faust.
    afile = tmp_path / "state"
    afile.write_text("")
    (line,) = refused(monkeypatch, KAIROS_WORKER__STATE_DIR=str(afile))
    assert line.startswith(f"KAIROS_WORKER__STATE_DIR: {afile} is a file, not a folder")
    missing = tmp_path / "not" / "yet"
    assert load(monkeypatch, KAIROS_WORKER__STATE_DIR=str(missing)).worker.state_dir == missing
    assert not missing.exists()  # reading the settings makes nothing


def test_the_console_update_interval_is_one_a_thread_can_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1e300 (past threading.TIMEOUT_MAX) raised OverflowError in each live page's stream after its
    # first update: the page showed one snapshot and never changed.
    (line,) = refused(monkeypatch, KAIROS_CONSOLE__UPDATE_SECONDS="1e300")
    assert line == "KAIROS_CONSOLE__UPDATE_SECONDS: Input should be less than or equal to 3600"
    assert load(monkeypatch, KAIROS_CONSOLE__UPDATE_SECONDS="3600").console.update_seconds == 3600.0


def test_the_gc_threshold_fits_gc_set_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 ** 31 or more raised OverflowError in gc.set_threshold at the worker's start-up (the app crashed).
    import gc

    from stream import gc_tuning

    (line,) = refused(monkeypatch, KAIROS_WORKER__GC_YOUNG_THRESHOLD=str(2**31))
    assert line == "KAIROS_WORKER__GC_YOUNG_THRESHOLD: Input should be less than or equal to 2147483647"
    before = gc.get_threshold()
    try:
        gc_tuning.configure(
            load(monkeypatch, KAIROS_WORKER__GC_YOUNG_THRESHOLD=str(2**31 - 1)).worker.gc_young_threshold
        )
        assert gc.get_threshold()[0] == 2**31 - 1
    finally:
        gc.set_threshold(*before)


def test_the_send_time_half_life_is_at_least_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    # The engagement hours are counted from a whole-second landmark: an event's fraction of a second
    # weighed 2 ** (fraction / half-life), so 0.01 s stored counts past 2 ** 64 (OverflowError encoding
    # the user's state) and 1e-9 s overflowed math.exp2 at the shopper's first event.
    for value in ("0.01", "1e-9", "0.999"):
        (line,) = refused(monkeypatch, KAIROS_POLICY__SEND_TIME_HALF_LIFE_SECONDS=value)
        assert (
            line == "KAIROS_POLICY__SEND_TIME_HALF_LIFE_SECONDS: Input should be greater than or equal to 1"
        )
    policy = load(monkeypatch, KAIROS_POLICY__SEND_TIME_HALF_LIFE_SECONDS="1").policy
    state = UserState()
    for k in range(200):  # events at every fraction of a second, each nearly a second after its landmark
        ts = 1.7e9 + k * 0.37 + 0.999
        observe_hour(state, ts, policy)
        assert UserState.from_bytes(state.to_bytes()).policy.send_hours == state.policy.send_hours


def test_session_gap_and_event_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    # A session gap of 0 or less reset the user's GRU state at every event a moment after the last
    # (the session model silently off: 66 pushes instead of 84 on the simulated shop); a negative
    # event lag made every event "stale", so no in-session push could ever be decided.
    for variable, value in (
        ("KAIROS_WORKER__SESSION_GAP_SECONDS", "0"),
        ("KAIROS_WORKER__SESSION_GAP_SECONDS", "-1"),
        ("KAIROS_WORKER__MAX_EVENT_LAG_SECONDS", "-1"),
    ):
        (line,) = refused(monkeypatch, **{variable: value})
        assert line.startswith(f"{variable}: Input should be greater than")
    # An event lag of 0 is meaningful with the event-time clock (decided at the event's own time).
    assert load(monkeypatch, KAIROS_WORKER__MAX_EVENT_LAG_SECONDS="0").worker.max_event_lag_seconds == 0.0


@pytest.mark.parametrize("value", [" ", "\t", ",", " , "])
def test_bootstrap_servers_that_name_no_broker_are_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Taken as a broker list, they failed only after the clients' 15 s metadata timeout at start
    # ("Broker transport failure"); an empty value still starts the embedded broker.
    (line,) = refused(monkeypatch, KAIROS_KAFKA__BOOTSTRAP_SERVERS=value)
    assert line.startswith("KAIROS_KAFKA__BOOTSTRAP_SERVERS: ") and "names no broker" in line


def test_bootstrap_servers_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("kafka:9092", "k1:9092,k2:9092,[::1]:9092", "SSL://broker.example:9093"):
        assert load(monkeypatch, KAIROS_KAFKA__BOOTSTRAP_SERVERS=value).kafka.bootstrap_servers == value
    # Empty is what it always was: no broker given, so kairos worker starts the embedded one.
    assert not load(monkeypatch, KAIROS_KAFKA__BOOTSTRAP_SERVERS="").kafka.bootstrap_servers


def test_a_time_to_live_within_the_minimum_lifetime_suppresses_as_expired() -> None:
    # Accepted (the rule tests use a time to live of 0) and documented: no push it applies to goes
    # out, each is counted as suppressed with reason "expired".
    from stream.policy import decide
    from stream.policy_state import UserPolicyState
    from tests.policy.conftest import T0, candidate, config

    for ttl, lifetime, outcome in (
        (600.0, 900.0, "expired"),
        (900.0, 900.0, "expired"),
        (901.0, 900.0, "ok"),
    ):
        cfg = config(push_ttl_seconds=ttl, min_push_lifetime_seconds=lifetime)
        ((_, verdict),) = decide("u1", [candidate()], UserPolicyState(), T0, cfg)
        assert verdict.reason == outcome


def test_a_misspelt_or_unknown_variable_is_named_with_the_option_it_most_likely_meant() -> None:
    environ = {
        "KAIROS_POLICY__THRESHHOLD": "0.2",
        "KAIROS_WORKER__BATCHSIZE": "64",
        "KAIROS_POLCY__THRESHOLD": "0.2",
        "KAIROS_WORKER__NOPE": "1",
        "KAIROS_POLICY__THRESHOLD": "0.2",  # known: not named
        "kairos_worker__batch_size": "64",  # the settings read names in any case
        "KAIROS_POLICY__TRIGGER_THRESHOLDS__PRICE_DROP": "0.3",  # one key of a dict option
        "KAIROS_MODELS_HOST_DIR": "./models",  # docker-compose's, not an option
        "KAIROS_NATIVE": "0",  # stream.native's switch, read before the settings: not an option
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        "KAIROS_POLCY__THRESHOLD (did you mean KAIROS_POLICY__THRESHOLD?)",
        "KAIROS_POLICY__THRESHHOLD (did you mean KAIROS_POLICY__THRESHOLD?)",
        "KAIROS_WORKER__BATCHSIZE (did you mean KAIROS_WORKER__BATCH_SIZE?)",
        "KAIROS_WORKER__NOPE",
    ]


def test_every_documented_variable_is_known() -> None:
    documented = set(re.findall(r"`(KAIROS_[A-Z0-9_]+)`", (ROOT / "docs" / "settings.md").read_text()))
    assert documented and not unknown_variables(dict.fromkeys(documented, ""))


def test_a_kairos_command_warns_of_an_unknown_variable_and_still_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KAIROS_POLICY__THRESHHOLD", "0.2")
    with caplog.at_level(logging.WARNING, logger="stream.settings"):
        assert main(["settings", "--markdown"]) == 0
    expected = "ignoring KAIROS_POLICY__THRESHHOLD (did you mean KAIROS_POLICY__THRESHOLD?)"
    assert [r.getMessage() for r in caplog.records if expected in r.getMessage()]


def test_topic_names_kafka_takes_for_one_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"\('shop.events', 'shop_events'\) differ only by '.' and '_'"):
        Settings(topics={"events": "shop.events", "consent": "shop_events"})


def test_only_a_dict_option_takes_a_variable_per_key() -> None:
    assert not unknown_variables({"KAIROS_POLICY__TRIGGER_THRESHOLDS__PRICE_DROP": "0.3"})
    assert unknown_variables({"KAIROS_WORKER__APP_ID__X": "y"}) == [
        "KAIROS_WORKER__APP_ID__X (did you mean KAIROS_WORKER__APP_ID?)"
    ]
