"""A FAISS inner-product index over item vectors, with per-query exclusions and the contract's tie rule.

The vectors are the model's item embeddings with the item bias as their last column; a user query carries
a constant 1 there, so ``query @ item`` is exactly the model's logit and the top k by inner product is the
model's top k. ``"exact"`` is ``faiss.IndexFlatIP`` (brute force); ``"hnsw"`` is ``faiss.IndexHNSWFlat``
(approximate; ``hnsw_recall`` measures it against exact), by default with ``METRIC_INNER_PRODUCT``, or with
``l2_reduction`` over the inner-product-to-L2 reduction of the vectors: each item gets one more coordinate
sqrt(max ||x||^2 - ||x||^2), each query a 0 there, so the nearest item in L2 is the item of largest inner
product (the scores returned are the candidates' exact inner products). Which graph finds more depends on
the vectors: on Gaussian vectors the inner-product graph does (recall@100 0.99 against 0.82 at the
defaults), on a KuaiRand model's items the reduction does (0.99 against 0.55, where the inner-product
graph stays at 0.55 whatever efSearch): measure it (``hnsw_recall``, ``twotower index`` reports it).

Search returns, per query, the k best items by score that are not in the query's exclusion set, ordered by
score descending, equal scores by the smaller item id (docs/retrieval.md). FAISS orders neither ties nor
exclusions, so each query is searched for k' = k + |its exclusions| + a margin results, filtered, re-sorted
by (-score, item id); a query whose k-th score equals the lowest score FAISS returned may have tied items
that were cut off, and is searched again with twice k' until that is not so or k' covers the catalog.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from twotower.io import atomic_path, write_json
from twotower.retrieval.sets import ItemSets
from twotower.retrieval.threads import omp_threads
from twotower.retrieval.vectors import as_matrix, check_item_ids, positions, stored_vectors, to_l2

KINDS: tuple[str, ...] = ("exact", "hnsw")
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.npy"
META_FILE = "index.json"
FORMAT_VERSION = 1
#: extra results searched beyond k + exclusions, so that a boundary tie rarely needs a second search
MARGIN = 16
#: queries x k' results held at once per chunk (labels, scores and their sort: about 40 bytes each)
RESULT_BUDGET = 1 << 22

_ID_PAD = np.iinfo(np.int64).max


class CheckpointMismatchError(ValueError):
    """The index was built from another checkpoint than the one it is being used with."""


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (a checkpoint can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


class ItemIndex:
    """Item vectors in a FAISS inner-product index, with the item id of every index position."""

    def __init__(
        self,
        index: faiss.Index,
        item_ids: np.ndarray,
        kind: str,
        params: dict[str, int],
        threads: int | str | None = None,
        checkpoint_sha256: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {list(KINDS)}, got {kind!r}")
        if index.ntotal != len(item_ids):
            raise ValueError(
                f"the FAISS index holds {index.ntotal} vectors but there are {len(item_ids)} item ids"
            )
        self.index = index
        self.item_ids = check_item_ids(item_ids, index.ntotal)
        self.kind = kind
        self.params = dict(params)
        self.threads = threads
        self.checkpoint_sha256 = checkpoint_sha256  # set by ``load``: the checkpoint it was built for
        self.meta = dict(meta or {})  # set by ``load``: index.json as read
        self._sorter = np.argsort(self.item_ids)
        self._sorted_ids = self.item_ids[self._sorter]
        if kind == "hnsw":  # indexes saved before the option was there are inner-product graphs
            self.params.setdefault("l2_reduction", 0)
        self._stored = stored_vectors(index) if self.l2_reduction else None  # (n, d + 1) view: exact scores

    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    @property
    def l2_reduction(self) -> bool:
        """HNSW over the inner-product-to-L2 reduction (it stores one more dimension)."""
        return bool(self.params.get("l2_reduction", 0))

    @property
    def d(self) -> int:
        """The dimension of the queries and item vectors."""
        return int(self.index.d) - self.l2_reduction

    @classmethod
    def build(
        cls,
        item_ids: Any,
        vectors: Any,
        kind: str = "exact",
        *,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 256,
        l2_reduction: bool = False,
        threads: int | None = None,
    ) -> ItemIndex:
        """Index ``vectors (n, d) float32`` (row i is item ``item_ids[i]``, ``(n,) int64``, unique, >= 0).

        HNSW: ``hnsw_m`` links per node, ``ef_construction`` and ``ef_search`` candidate lists (a search
        uses at least k' candidates). The defaults reach recall@100 of about 0.99 against exact search on
        20,000 Gaussian vectors in 65 dimensions, a hard case for graph search (tests/test_retrieval_index.py).
        """
        x = as_matrix(vectors, "item vectors")
        n, d = x.shape
        ids = check_item_ids(item_ids, n)
        if kind == "exact":
            index: faiss.Index = faiss.IndexFlatIP(d)
            params: dict[str, int] = {}
        elif kind == "hnsw":
            if min(hnsw_m, ef_construction, ef_search) < 1:
                raise ValueError("hnsw_m, ef_construction and ef_search must be positive")
            if l2_reduction:
                index = faiss.IndexHNSWFlat(d + 1, int(hnsw_m), faiss.METRIC_L2)
            else:
                index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            index.hnsw.efSearch = int(ef_search)
            params = {
                "hnsw_m": int(hnsw_m),
                "ef_construction": int(ef_construction),
                "ef_search": int(ef_search),
                "l2_reduction": int(bool(l2_reduction)),
            }
        else:
            raise ValueError(f"index kind must be one of {list(KINDS)}, got {kind!r}")
        with omp_threads(threads):
            index.add(to_l2(x) if kind == "hnsw" and l2_reduction else x)
        return cls(index, ids, kind, params, threads)

    # ---------------------------------------------------------------------------------------- search

    def search(
        self, queries: Any, k: int, exclude: ItemSets | None = None, *, budget: int = RESULT_BUDGET
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items per query: ``(item_ids (q, k) int64, scores (q, k) float32)``.

        ``queries (q, d)``; ``exclude``: one item set per query (ids not in the index are ignored). Rank
        order: score descending, equal scores by the smaller item id; a query with fewer than k candidates
        is padded with item id -1 and score -inf. Queries are processed in chunks of at most ``budget``
        results, fewest exclusions first.
        """
        q = as_matrix(queries, "queries", self.d)
        nq, k = len(q), int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if exclude is not None and exclude.n_rows != nq:
            raise ValueError(f"exclude has {exclude.n_rows} rows for {nq} queries")
        out_ids = np.full((nq, k), -1, dtype=np.int64)
        out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
        if nq == 0 or self.n == 0:
            return out_ids, out_scores
        if exclude is None:
            exclude = ItemSets.empty(nq)
        pos, found = positions(self._sorted_ids, self._sorter, exclude.items)
        excl = ItemSets.from_pairs(exclude.rows()[found], pos[found], nq)  # index positions per query
        need = np.minimum(k + excl.counts() + MARGIN, self.n)
        order = np.argsort(need, kind="stable")
        with omp_threads(self.threads):
            start = 0
            while start < nq:
                rows = max(1, budget // int(need[order[start]]))
                stop = min(nq, start + rows)
                kp = int(need[order[stop - 1]])
                stop = min(stop, start + max(1, budget // kp))
                kp = int(need[order[stop - 1]])
                chunk = order[start:stop]
                self._search_rows(q, chunk, excl.take(chunk), k, kp, budget, out_ids, out_scores)
                start = stop
        return out_ids, out_scores

    def set_ef_search(self, ef_search: int) -> ItemIndex:
        """HNSW only: the default candidate list of later searches (recall against speed); returns self."""
        if self.kind != "hnsw" or ef_search < 1:
            raise ValueError(
                f"ef_search applies to a 'hnsw' index and must be positive ({self.kind}, {ef_search})"
            )
        self.params["ef_search"] = int(ef_search)
        self.index.hnsw.efSearch = int(ef_search)
        return self

    def _faiss_search(self, q: np.ndarray, kp: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of the k' best of queries ``q``: inner products, best first."""
        if self.kind != "hnsw":
            return self.index.search(q, kp)
        params = faiss.SearchParametersHNSW(efSearch=max(self.params["ef_search"], kp))  # at least k'
        if not self.l2_reduction:
            return self.index.search(q, kp, params=params)
        padded = np.hstack([q, np.zeros((len(q), 1), np.float32)])
        _, labels = self.index.search(padded, kp, params=params)
        return self._inner_products(q, labels), labels

    def _inner_products(self, q: np.ndarray, labels: np.ndarray, chunk_floats: int = 1 << 24) -> np.ndarray:
        """Exact scores ``q[i] @ item[labels[i, j]]`` (q, k') float32 (-inf where the label is -1), gathered
        from the stored vectors a chunk of queries at a time."""
        out = np.full(labels.shape, -np.inf, dtype=np.float32)
        d = self.d
        step = max(1, chunk_floats // max(labels.shape[1] * d, 1))
        for i in range(0, len(labels), step):
            lab = labels[i : i + step]
            vectors = self._stored[np.where(lab >= 0, lab, 0), :d]  # (s, k', d)
            scores = np.einsum("skd,sd->sk", vectors, q[i : i + step], dtype=np.float32)
            out[i : i + step] = np.where(lab >= 0, scores, -np.inf)
        return out

    def _search_rows(
        self,
        q: np.ndarray,
        rows: np.ndarray,
        excl: ItemSets,
        k: int,
        kp: int,
        budget: int,
        out_ids: np.ndarray,
        out_scores: np.ndarray,
    ) -> None:
        """Search queries ``q[rows]`` (exclusions ``excl``, index positions) with k' = ``kp``; queries whose
        k-th result is tied with the lowest score returned go again with twice k' (at most ``budget``
        results per FAISS call)."""
        n = self.n
        pending = [(rows, excl, kp)]
        while pending:
            rows, excl, kp = pending.pop()
            step = max(1, budget // kp)
            if len(rows) > step:  # a widened search of many queries: split to stay within the budget
                pending += [(rows[i : i + step], excl.slice(i, min(i + step, len(rows))), kp)
                            for i in range(0, len(rows), step)]  # fmt: skip
                continue
            scores, labels = self._faiss_search(q[rows], kp)
            m = len(rows)
            valid = labels >= 0
            excl_keys = np.sort(excl.rows() * n + excl.items)
            keys = np.arange(m, dtype=np.int64)[:, None] * n + np.where(valid, labels, 0)
            at = np.minimum(np.searchsorted(excl_keys, keys), max(len(excl_keys) - 1, 0))
            excluded = excl_keys[at] == keys if len(excl_keys) else np.zeros_like(valid)
            cand = valid & ~excluded
            ids = np.where(cand, self.item_ids[np.where(valid, labels, 0)], _ID_PAD)
            sc = np.where(cand, scores, -np.inf).astype(np.float32)
            srt = np.lexsort((ids, -sc), axis=1)
            ids = np.take_along_axis(ids, srt, axis=1)
            sc = np.take_along_axis(sc, srt, axis=1)
            complete = (kp >= n) | (valid.sum(axis=1) < kp)  # every candidate was returned
            lowest = np.where(valid, scores, np.inf).min(axis=1)
            kth = sc[:, k - 1] if kp >= k else np.full(m, -np.inf, dtype=np.float32)
            done = complete | ((cand.sum(axis=1) >= k) & (kth > lowest))
            width = min(k, kp)
            hit_ids, hit_sc = ids[done, :width], sc[done, :width]
            out_ids[rows[done], :width] = np.where(np.isfinite(hit_sc), hit_ids, -1)
            out_scores[rows[done], :width] = hit_sc
            if not done.all():
                keep = np.flatnonzero(~done)
                pending.append((rows[keep], excl.take(keep), min(n, 2 * kp)))

    # ---------------------------------------------------------------------------------- persistence

    def save(
        self,
        directory: str | Path,
        checkpoint_sha256: str,
        *,
        overwrite: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``index.faiss``, ``item_ids.npy`` and ``index.json`` to ``directory``, as one atomic rename
        of a complete temporary directory. An existing directory is an error unless ``overwrite``.
        ``extra``: more keys for index.json (what the index is of, its measured recall); they cannot
        replace the keys above."""
        directory = Path(directory)
        if directory.exists() and not overwrite:
            raise FileExistsError(f"index directory {directory} already exists; remove it or choose another")
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "params": self.params,
            "n": self.n,
            "d": self.d,
            "checkpoint_sha256": str(checkpoint_sha256),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "faiss_version": faiss.__version__,
        }
        clash = set(extra or {}) & set(meta)
        if clash:
            raise ValueError(f"index.json extra keys {sorted(clash)} would replace the index's own")
        meta.update(extra or {})
        old = directory.with_name(f".{directory.name}.old") if directory.exists() else None
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            np.save(tmp / IDS_FILE, self.item_ids, allow_pickle=False)
            write_json(tmp / META_FILE, meta)
            if old is not None:  # os.replace cannot replace a non-empty directory: move the old one aside
                shutil.rmtree(old, ignore_errors=True)
                directory.rename(old)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return directory

    @classmethod
    def load(
        cls,
        directory: str | Path,
        expected_checkpoint_sha256: str | None = None,
        *,
        threads: int | str | None = None,
    ) -> ItemIndex:
        """Read an index written by ``save``; ``CheckpointMismatchError`` (a ``ValueError``) when it was
        built for another checkpoint than ``expected_checkpoint_sha256``."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} not found: build the index with `twotower index`")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        missing = {"format_version", "kind", "params", "n", "d", "checkpoint_sha256"} - set(meta)
        if missing or meta["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: not an index description of format {FORMAT_VERSION} "
                f"(missing {sorted(missing)}); rebuild it with `twotower index`"
            )
        built_for = meta["checkpoint_sha256"]
        if expected_checkpoint_sha256 is not None and built_for != expected_checkpoint_sha256:
            raise CheckpointMismatchError(
                f"index {directory} was built for checkpoint {built_for}, not {expected_checkpoint_sha256}; "
                "rebuild it with `twotower index`"
            )
        index = faiss.read_index(str(directory / INDEX_FILE))
        ids = np.load(directory / IDS_FILE, allow_pickle=False)
        stored_d = meta["d"] + bool(meta["params"].get("l2_reduction", 0))  # the reduction's extra dimension
        if index.ntotal != meta["n"] or len(ids) != meta["n"] or index.d != stored_d:
            raise ValueError(
                f"index {directory}: {INDEX_FILE} ({index.ntotal} x {index.d}), {IDS_FILE} "
                f"({len(ids)} ids) and {META_FILE} (n={meta['n']}, d={meta['d']}) disagree; "
                "rebuild it with `twotower index`"
            )
        return cls(index, ids, meta["kind"], meta["params"], threads, built_for, meta)


# ------------------------------------------------------------------------------- reference and recall


def exact_topk(
    queries: Any, item_ids: Any, vectors: Any, k: int, exclude: ItemSets | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force reference for ``ItemIndex.search``: float64 scores of every item, excluded items
    dropped, ``np.lexsort`` by (-score, item id). Returns ``(ids (q, k) int64, scores (q, k) float64)``,
    padded with -1 / -inf. Holds a (q, n) matrix: for tests and small inputs."""
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(vectors, dtype=np.float64)
    ids = np.asarray(item_ids, dtype=np.int64)
    scores = q @ x.T
    if exclude is not None:
        pos, found = positions(np.sort(ids), np.argsort(ids), exclude.items)
        scores[exclude.rows()[found], pos[found]] = -np.inf
    order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]
    top_ids = ids[order]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids[~np.isfinite(top_scores)] = -1
    pad = k - order.shape[1]
    if pad > 0:
        top_ids = np.pad(top_ids, ((0, 0), (0, pad)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return top_ids, top_scores


def hnsw_recall(exact: ItemIndex, approx: ItemIndex, queries: Any, k: int = 100) -> float:
    """Mean over queries of |approx top k ∩ exact top k| / |exact top k| (queries with no result skipped).

    Both indexes must hold the same item ids."""
    if not np.array_equal(exact._sorted_ids, approx._sorted_ids):
        raise ValueError("hnsw_recall: the two indexes must hold the same item ids")
    truth, _ = exact.search(queries, k)
    found, _ = approx.search(queries, k)
    n = np.int64(exact.n)
    rows = np.broadcast_to(np.arange(len(truth), dtype=np.int64)[:, None], truth.shape)
    t, f = truth >= 0, found >= 0
    truth_keys = np.sort(rows[t] * n + positions(exact._sorted_ids, exact._sorter, truth[t])[0])
    found_keys = rows[f] * n + positions(exact._sorted_ids, exact._sorter, found[f])[0]
    at = np.minimum(np.searchsorted(truth_keys, found_keys), max(len(truth_keys) - 1, 0))
    hits = truth_keys[at] == found_keys if len(truth_keys) else np.zeros(len(found_keys), dtype=bool)
    n_hits = np.bincount(rows[f][hits], minlength=len(truth))
    n_truth = t.sum(axis=1)
    ok = n_truth > 0
    return float((n_hits[ok] / n_truth[ok]).mean()) if ok.any() else float("nan")
