"""The Kafka edge: offline CLI, and one integration run against a real (embedded Tansu) broker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream.contract import Push, parse_catalog, parse_event, push_id, to_json_bytes
from stream.replay import DatasetMissingError, dataset_files
from stream.settings import KafkaConfig, Settings
from stream.sim_cli import simulate_main
from stream.sim_runner import ShopSimulator, replay_to_kafka
from stream.simulator import SimConfig


def test_offline_mode_writes_events(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    assert simulate_main(["--out", str(out), "--events", "400", "--users", "100", "--items", "50"]) == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 400
    assert all(parse_event(line).user_id.startswith("u") for line in lines)


def test_offline_replay_writes_events(tmp_path: Path) -> None:
    settings = Settings()  # type: ignore[call-arg]
    try:
        dataset_files("retailrocket", settings.data_dir)
    except DatasetMissingError as exc:
        pytest.skip(f"dataset absent: {exc}")
    out = tmp_path / "rr.jsonl"
    assert simulate_main(["--replay", "retailrocket", "--out", str(out), "--events", "300"]) == 0
    assert len([parse_event(line) for line in out.read_bytes().splitlines()]) == 300


def test_live_mode_without_a_broker_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAIROS_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    assert simulate_main(["--seconds", "1"]) == 2
    assert "--bootstrap" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """An embedded Tansu broker for this module."""
    from stream.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap


def _read_all(
    settings: Settings, topic: str, expected: int, timeout: float = 20.0
) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` (no consumer group: partitions assigned from the beginning)."""
    conf = {
        **settings.kafka.confluent_config(),
        "group.id": "kairos-test-reader",
        "enable.auto.commit": False,
    }
    consumer = Consumer(conf)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.5):
                if m.error() is None:
                    records.append((m.key() or b"", m.value() or b""))
        return records
    finally:
        consumer.close()


@pytest.mark.integration
def test_simulator_produces_to_a_real_broker_and_answers_pushes(bootstrap: str) -> None:
    settings = Settings(kafka=KafkaConfig(bootstrap_servers=bootstrap))  # type: ignore[call-arg]
    config = SimConfig(seed=5, n_users=200, n_items=120)
    sim = ShopSimulator(settings, config, rate=1500, group_id="sim-test")
    sim.start()
    try:
        now = sim.world.now
        producer = Producer(settings.kafka.confluent_config())
        pushes = []
        for k in range(30):
            user = f"u{k:06d}"
            pushes.append(
                Push(
                    push_id=push_id(user, "i00001", "in_session", "t"),
                    user_id=user,
                    item_id="i00001",
                    trigger="in_session",
                    reason="test",
                    score=0.9,
                    threshold=0.5,
                    model_version="t",
                    event_ts=now,
                    created_at=now,
                    expires_at=now + 86_400,
                )  # fmt: skip
            )
            producer.produce(settings.topics.pushes, to_json_bytes(pushes[-1]), key=user.encode())
        producer.produce(settings.topics.pushes, b"not json", key=b"u000000")
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 30
        while sim.pushes_received < len(pushes) and time.monotonic() < deadline and sim.running():
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        sim.stop()
    assert sim.error is None
    summary = sim.summary()
    assert summary["pushes_consumed"] == len(pushes) and summary["pushes_invalid"] == 1
    assert summary["pushes"] == len(pushes)  # the world received each push once
    produced = int(summary["produced.events"])
    assert produced > 1000 and summary["produced.delivery_errors"] == 0

    records = _read_all(settings, settings.topics.events, produced)
    assert len(records) == produced
    for key, value in records[::50]:
        event = parse_event(value)
        assert key.decode() == event.user_id
    catalog = _read_all(settings, settings.topics.catalog, config.n_items)
    assert len(catalog) >= config.n_items
    assert all(parse_catalog(v).item_id == k.decode() for k, v in catalog[:20])
    consent = _read_all(settings, settings.topics.consent, config.n_users)
    assert len(consent) >= config.n_users
    assert json.loads(consent[0][1])["user_id"] == consent[0][0].decode()


@pytest.mark.integration
def test_replay_to_a_real_broker_keeps_compressed_timing(bootstrap: str, tmp_path: Path) -> None:
    folder = tmp_path / "retailrocket-sample"
    folder.mkdir()
    (folder / "events.tsv").write_text(
        "Time\tUserId\tType\tItemId\tSessionId\tCatId\n"
        "1442000000\t1\tview\t5\t1\t7\n"
        "1442003600\t2\tview\t6\t2\t8\n"
        "1442005400\t1\taddtocart\t5\t1\t7\n"
    )
    settings = Settings(  # type: ignore[call-arg]
        kafka=KafkaConfig(bootstrap_servers=bootstrap), data_dir=tmp_path,
        topics={"events": "replay-events", "catalog": "replay-catalog"},
    )  # fmt: skip
    started = time.monotonic()
    counts = replay_to_kafka(settings, "retailrocket", compress=3600.0)
    elapsed = time.monotonic() - started
    assert counts["events"] == 3 and counts["catalog"] == 2
    assert 1.4 <= elapsed < 5.0  # the last event is due 1.5 s after the first
    records = _read_all(settings, "replay-events", 3)
    assert sorted(parse_event(v).type for _, v in records) == ["add_to_cart", "view", "view"]


@pytest.mark.integration
def test_cli_live_run(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--bootstrap", bootstrap, "--rate", "400", "--seconds", "2", "--users", "100", "--items", "60"]
    assert simulate_main([*argv, "--no-pushes"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 300 <= summary["produced.events"] <= 1200


def test_offline_mode_takes_the_event_count_and_refuses_bad_world_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim.jsonl"
    # --events 0 wrote the default 100,000 events.
    assert simulate_main(["--out", str(out), "--events", "0", "--users", "20", "--items", "30"]) == 0
    assert out.read_bytes() == b""
    # Settings the world cannot run are a usage error, not a traceback.
    for bad in (["--users", "0"], ["--seed", "-1"], ["--events", "-5"]):
        with pytest.raises(SystemExit) as exit_info:
            simulate_main(["--out", str(out), *bad])
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err
