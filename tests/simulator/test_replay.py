"""Dataset replay: time order, compression, type mapping, catalog entries, clear error when absent."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stream.contract import CatalogUpdate, Event, parse_catalog, parse_event, to_json_bytes
from stream.replay import DatasetMissingError, dataset_files, replay, synthetic_item
from stream.settings import Settings

DATA = Settings().data_dir  # type: ignore[call-arg]


def _need(dataset: str) -> None:
    try:
        dataset_files(dataset, DATA)
    except DatasetMissingError as exc:
        pytest.skip(f"dataset absent: {exc}")


@pytest.mark.data
def test_retailrocket_in_time_order_with_compressed_timing() -> None:
    _need("retailrocket")
    msgs = list(replay("retailrocket", DATA, compress=3600.0))
    events = [(m.due, m.message) for m in msgs if isinstance(m.message, Event)]
    assert Counter(e.type for _, e in events) == {"view": 36003, "add_to_cart": 2128, "purchase": 610}
    ts = [e.ts for _, e in events]
    assert ts == sorted(ts)
    dues = [m.due for m in msgs]
    assert dues == sorted(dues) and dues[0] == 0.0
    for due, e in events[::500]:
        assert due == pytest.approx((e.ts - ts[0]) / 3600.0)
    # A week of data in under three minutes at 3600x.
    assert 100 < dues[-1] < 200
    assert len({e.event_id for _, e in events}) == len(events)
    # Each item's catalog entry comes before its first event, with its category.
    first_seen: dict[str, int] = {}
    catalog: dict[str, int] = {}
    for k, m in enumerate(msgs):
        if isinstance(m.message, CatalogUpdate):
            catalog[m.message.item_id] = k
        elif m.message.item_id not in first_seen:
            first_seen[m.message.item_id or ""] = k
    assert set(catalog) == set(first_seen)
    assert all(catalog[i] < first_seen[i] for i in first_seen)
    sample = next(m.message for m in msgs if isinstance(m.message, Event) and m.message.type == "purchase")
    assert parse_event(to_json_bytes(sample)) == sample and sample.quantity == 1 and sample.price


@pytest.mark.data
def test_yoochoose_sessions_as_users() -> None:
    _need("yoochoose")
    msgs = list(replay("yoochoose", DATA, compress=7200.0, with_catalog=False))
    assert all(isinstance(m.message, Event) for m in msgs)
    events = [m.message for m in msgs if isinstance(m.message, Event)]
    assert len(events) == 70_278 + 13_568
    assert {e.type for e in events} == {"view"}
    assert all(e.user_id == e.session_id for e in events[:1000])
    ts = [e.ts for e in events]
    assert ts == sorted(ts)
    assert msgs[-1].due == pytest.approx((ts[-1] - ts[0]) / 7200.0)


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="retailrocket-sample/events.tsv.*KAIROS_DATA_DIR"):
        list(replay("retailrocket", tmp_path))
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_files("movielens", tmp_path)


def test_bad_file_names_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "yoochoose-100k"
    folder.mkdir()
    (folder / "train_full.tsv").write_text("SessionId\tItemId\tTime\n1\t10\t1396437466.9\n1\t11\tsoon\n")
    (folder / "test.tsv").write_text("SessionId\tItemId\tTime\n")
    with pytest.raises(ValueError, match=r"train_full.tsv:3: time 'soon'"):
        list(replay("yoochoose", tmp_path))
    (folder / "train_full.tsv").write_text("SessionId\tItem\tTime\n")
    with pytest.raises(ValueError, match="missing column"):
        list(replay("yoochoose", tmp_path))


def test_tiny_replay_orders_and_compresses(tmp_path: Path) -> None:
    folder = tmp_path / "retailrocket-sample"
    folder.mkdir()
    (folder / "events.tsv").write_text(
        "Time\tUserId\tType\tItemId\tSessionId\tCatId\n"
        "1442004000\t0\tview\t5\t1\t7\n"
        "1442007600\t0\taddtocart\t5\t1\t7\n"
        "1442000400\t9\tview\t6\t2\t8\n"
        "1442007600\t9\ttransaction\t6\t2\t8\n"
    )
    msgs = list(replay("retailrocket", tmp_path, compress=3600.0))
    kinds = [(m.due, type(m.message).__name__, getattr(m.message, "type", None)) for m in msgs]
    assert kinds == [
        (0.0, "CatalogUpdate", None),
        (0.0, "Event", "view"),
        (1.0, "CatalogUpdate", None),
        (1.0, "Event", "view"),
        (2.0, "Event", "add_to_cart"),
        (2.0, "Event", "purchase"),
    ]
    entry = msgs[0].message
    assert isinstance(entry, CatalogUpdate) and entry.category == "8" and entry.item_id == "6"
    assert parse_catalog(to_json_bytes(entry)) == entry == synthetic_item("6", "8", 1442000400)
