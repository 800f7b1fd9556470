"""The FAISS item index against brute-force numpy top-k; HNSW recall; saving and loading with the checkpoint hash."""

from __future__ import annotations

import hashlib
import json

import faiss
import numpy as np
import pytest

from twotower.retrieval.index import (
    CheckpointMismatchError,
    ItemIndex,
    exact_topk,
    file_sha256,
    hnsw_recall,
)
from twotower.retrieval.sets import ItemSets
from twotower.retrieval.threads import omp_threads


def quantized(rng, shape, levels=4):
    """Multiples of 1/2 in [-levels/2, levels/2]: every float32 product and sum below is exact, so FAISS and
    the float64 reference compute identical scores and equal scores are genuinely equal (many ties)."""
    return (rng.integers(-levels, levels + 1, shape) / 2).astype(np.float32)


def random_exclusions(rng, ids, n_rows, most):
    return ItemSets.from_lists(
        [rng.choice(ids, int(rng.integers(0, most + 1)), replace=False) for _ in range(n_rows)]
    )


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(0)
    n, d = 3000, 8
    ids = rng.choice(100_000, n, replace=False).astype(np.int64)  # unsorted, with gaps
    return rng, ids, quantized(rng, (n, d))


@pytest.mark.parametrize("k", [1, 10, 100, 500])
@pytest.mark.parametrize("budget", [1 << 22, 3000])  # 3000: many chunks and boundary ties that need widening
def test_exact_index_equals_brute_force_with_exclusions_and_ties(catalog, k, budget):
    rng, ids, vectors = catalog
    queries = quantized(rng, (300, vectors.shape[1]))
    exclude = random_exclusions(rng, ids, len(queries), 80)
    index = ItemIndex.build(ids, vectors)
    got_ids, got_scores = index.search(queries, k, exclude, budget=budget)
    want_ids, want_scores = exact_topk(queries, ids, vectors, k, exclude)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores.astype(np.float32))
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32
    # the data really has ties at the boundary (the k-th score equals the next candidate's: 14% of the
    # queries for k = 1, most for larger k), and no excluded item is returned
    _, wider = exact_topk(queries, ids, vectors, k + 1, exclude)
    assert (wider[:, k - 1] == wider[:, k]).mean() > 0.1
    for row, excluded in enumerate(exclude.to_lists()):
        assert not set(excluded) & set(got_ids[row].tolist())


@pytest.mark.parametrize("budget", [1 << 22, 100])  # 100: the widened searches are split into many calls
def test_a_tie_larger_than_the_search_width_is_ordered_by_item_id(budget):
    """600 items share the best score: FAISS's first k' = k + 16 results are an arbitrary part of them, so the
    search must widen until the k smallest ids of the tie are certain."""
    rng = np.random.default_rng(1)
    n = 2000
    ids = rng.permutation(n).astype(np.int64) * 7
    vectors = np.zeros((n, 2), dtype=np.float32)
    vectors[:, 0] = rng.uniform(-1, 0.5, n)
    vectors[:600, 0] = 1.0
    got, scores = ItemIndex.build(ids, vectors).search(np.tile([1.0, 0.0], (30, 1)), 20, budget=budget)
    assert got.tolist() == [sorted(ids[:600].tolist())[:20]] * 30
    assert (scores == 1.0).all()


def test_k_larger_than_the_candidates_pads(catalog):
    rng, ids, vectors = catalog
    small_ids, small = ids[:40], vectors[:40]
    queries = quantized(rng, (5, small.shape[1]))
    exclude = ItemSets.from_lists([[], small_ids[:10], small_ids, [123456789], small_ids[::2]])
    got_ids, got_scores = ItemIndex.build(small_ids, small).search(queries, 60, exclude)
    want_ids, want_scores = exact_topk(queries, small_ids, small, 60, exclude)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_array_equal(got_scores, want_scores.astype(np.float32))
    assert [int((row >= 0).sum()) for row in got_ids] == [40, 30, 0, 40, 20]
    assert np.isneginf(got_scores[2]).all() and (got_ids[2] == -1).all()


def test_continuous_vectors_match_the_float64_reference():
    """Gaussian vectors: FAISS's float32 scores agree with float64 to rounding, and the items it returns carry
    exactly the reference's top-k scores (an item swapped with one of equal score up to rounding is fine)."""
    rng = np.random.default_rng(2)
    n, d, k = 5000, 65, 100
    ids = np.arange(n, dtype=np.int64) * 3
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(200, d)).astype(np.float32)
    queries[:, -1] = 1.0  # the bias column
    exclude = random_exclusions(rng, ids, len(queries), 50)
    got_ids, got_scores = ItemIndex.build(ids, vectors).search(queries, k, exclude)
    want_ids, want_scores = exact_topk(queries, ids, vectors, k, exclude)
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-4)
    exact_of_got = np.einsum(
        "qd,qkd->qk", queries.astype(np.float64), vectors[got_ids // 3].astype(np.float64)
    )
    np.testing.assert_allclose(np.sort(exact_of_got, axis=1), np.sort(want_scores, axis=1), atol=1e-4)
    assert (got_ids == want_ids).mean() > 0.99


def test_hnsw_recall_against_exact():
    """Bound 0.95: with the defaults (M 32, efConstruction 200, efSearch 256) recall@100 on 20,000 Gaussian
    vectors in 65 dimensions measured 0.99 (no structure to exploit: harder than real item embeddings);
    0.95 leaves room for FAISS versions and thread scheduling, and would catch a wrong metric or efSearch."""
    rng = np.random.default_rng(3)
    n, d = 20_000, 65
    ids = rng.choice(10 * n, n, replace=False).astype(np.int64)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(200, d)).astype(np.float32)
    exact = ItemIndex.build(ids, vectors)
    approx = ItemIndex.build(ids, vectors, "hnsw")
    recall = hnsw_recall(exact, approx, queries, k=100)
    assert recall >= 0.95
    # the same value by hand; and HNSW results follow the same rules (exclusions, order, padding)
    truth, _ = exact.search(queries, 100)
    found, found_scores = approx.search(queries, 100)  # efSearch 256
    by_hand = np.mean(
        [len(set(a) & set(b)) / 100 for a, b in zip(truth.tolist(), found.tolist(), strict=True)]
    )
    assert recall == pytest.approx(by_hand)
    assert hnsw_recall(exact, exact, queries, k=100) == 1.0
    assert hnsw_recall(exact, approx.set_ef_search(1024), queries, k=100) >= recall  # longer candidate list
    with pytest.raises(ValueError, match="ef_search applies to a 'hnsw' index"):
        exact.set_ef_search(64)
    assert (np.diff(found_scores, axis=1) <= 0).all()
    exclude = ItemSets.from_lists([truth[q, :10] for q in range(len(queries))])
    found_ex, _ = approx.search(queries, 100, exclude)
    assert all(not set(truth[q, :10].tolist()) & set(found_ex[q].tolist()) for q in range(len(queries)))
    assert (found_ex >= 0).all()


def test_hnsw_over_the_l2_reduction_returns_exact_inner_products_and_round_trips(tmp_path):
    """Items in 40 clusters of directions with log-normal norms. The reduction's graph finds the top 100
    (recall >= 0.95 at efSearch 1024; measured 0.998); its scores are the exact inner products of the
    returned items, in order; save/load keeps the reduction (d + 1 stored dimensions, d in index.json).
    Whether it beats the inner-product graph depends on the vectors (docs/retrieval.md): not tested here."""
    rng = np.random.default_rng(11)
    n, d = 4000, 16
    directions = rng.normal(size=(40, d))
    vectors = directions[rng.integers(0, 40, n)] + 0.2 * rng.normal(size=(n, d))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * rng.lognormal(0, 0.4, (n, 1))).astype(np.float32)
    ids = np.arange(n, dtype=np.int64) * 7
    queries = rng.normal(size=(100, d)).astype(np.float32)
    exact = ItemIndex.build(ids, vectors)
    reduced = ItemIndex.build(ids, vectors, "hnsw", hnsw_m=16, ef_construction=64, ef_search=1024, l2_reduction=True)
    assert reduced.d == d and reduced.index.d == d + 1 and reduced.params["l2_reduction"] == 1
    assert hnsw_recall(exact, reduced, queries, k=100) >= 0.95
    found, scores = reduced.search(queries, 50)
    want = np.einsum("qd,qkd->qk", queries.astype(np.float64), vectors[found // 7].astype(np.float64))
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    loaded = ItemIndex.load(reduced.save(tmp_path / "ix", "h"), "h")
    assert loaded.l2_reduction and loaded.d == d
    np.testing.assert_array_equal(loaded.search(queries, 50)[0], found)


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_save_load_round_trip(tmp_path, catalog, kind):
    rng, ids, vectors = catalog
    queries = quantized(rng, (50, vectors.shape[1]))
    exclude = random_exclusions(rng, ids, len(queries), 20)
    index = ItemIndex.build(ids, vectors, kind, hnsw_m=16, ef_construction=64, ef_search=100)
    before = index.search(queries, 30, exclude)
    out = index.save(tmp_path / "index", "abc123")
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss", "index.json", "item_ids.npy"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temporary left behind
    meta = json.loads((out / "index.json").read_text())
    assert (meta["kind"], meta["n"], meta["d"], meta["checkpoint_sha256"]) == (kind, len(ids), 8, "abc123")
    if kind == "hnsw":
        assert meta["params"] == {"hnsw_m": 16, "ef_construction": 64, "ef_search": 100, "l2_reduction": 0}
    loaded = ItemIndex.load(out, expected_checkpoint_sha256="abc123")
    assert loaded.kind == kind and loaded.checkpoint_sha256 == "abc123"
    np.testing.assert_array_equal(loaded.item_ids, ids)
    after = loaded.search(queries, 30, exclude)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert ItemIndex.load(out).n == len(ids)  # no expectation: no check


def test_load_with_another_checkpoint_is_an_error(tmp_path, catalog):
    _, ids, vectors = catalog
    ItemIndex.build(ids, vectors).save(tmp_path / "ix", "a" * 64)
    with pytest.raises(
        CheckpointMismatchError, match=r"was built for checkpoint a{64}, not b{64}; rebuild it"
    ):
        ItemIndex.load(tmp_path / "ix", expected_checkpoint_sha256="b" * 64)
    assert issubclass(CheckpointMismatchError, ValueError)
    with pytest.raises(FileNotFoundError, match="index.json not found"):
        ItemIndex.load(tmp_path / "nothing")


def test_save_never_overwrites_unless_asked(tmp_path, catalog):
    _, ids, vectors = catalog
    ItemIndex.build(ids, vectors).save(tmp_path / "ix", "one")
    with pytest.raises(FileExistsError, match="already exists"):
        ItemIndex.build(ids[:10], vectors[:10]).save(tmp_path / "ix", "two")
    assert ItemIndex.load(tmp_path / "ix").checkpoint_sha256 == "one"
    ItemIndex.build(ids[:10], vectors[:10]).save(tmp_path / "ix", "two", overwrite=True)
    loaded = ItemIndex.load(tmp_path / "ix", "two")
    assert loaded.n == 10
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]


def test_file_sha256(tmp_path):
    data = np.random.default_rng(4).bytes(3 * (1 << 20) + 5)  # several chunks
    (tmp_path / "model.pt").write_bytes(data)
    assert file_sha256(tmp_path / "model.pt") == hashlib.sha256(data).hexdigest()


def test_threads_are_restored():
    before = faiss.omp_get_max_threads()
    with omp_threads(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before


@pytest.mark.parametrize(
    ("ids", "vectors", "match"),
    [
        ([1, 1], np.zeros((2, 3)), "unique"),
        ([1, -1], np.zeros((2, 3)), "non-negative"),
        ([1, 2, 3], np.zeros((2, 3)), "2 integers"),
        ([1, 2], np.array([[0, 0, np.nan], [0, 0, 0]]), "finite"),
        ([1, 2], np.zeros(3), "two-dimensional"),
    ],
)
def test_bad_build_input(ids, vectors, match):
    with pytest.raises(ValueError, match=match):
        ItemIndex.build(np.array(ids), vectors)


def test_bad_search_input(catalog):
    _, ids, vectors = catalog
    index = ItemIndex.build(ids, vectors)
    with pytest.raises(ValueError, match="queries have 3 columns, the index has d = 8"):
        index.search(np.zeros((2, 3)), 5)
    with pytest.raises(ValueError, match="exclude has 1 rows for 2 queries"):
        index.search(np.zeros((2, 8)), 5, ItemSets.from_lists([[1]]))
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(np.zeros((2, 8)), 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        ItemIndex.build(ids, vectors, "ivf")


def test_item_sets_take_slice_and_pairs():
    sets = ItemSets.from_lists([[1, 2], [], [3], [4, 5, 6]])
    assert sets.take(np.array([3, 0])).to_lists() == [[4, 5, 6], [1, 2]]
    assert sets.take(np.array([False, True, True, False])).to_lists() == [[], [3]]
    assert sets.slice(1, 4).to_lists() == [[], [3], [4, 5, 6]]
    assert ItemSets.from_pairs([3, 0, 3, 2], [9, 8, 7, 6], 4).to_lists() == [[8], [], [6], [9, 7]]
    with pytest.raises(ValueError, match="end at len"):
        ItemSets(np.array([0, 3]), np.array([1, 2]))
