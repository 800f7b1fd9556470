"""Feature space of the two-tower model: fitted on training rows, applied to any rows (scikit-learn style).

``FeatureSpace.fit`` learns the id vocabularies (user, item, creator; index 0 = out of vocabulary or rare),
the mean/std of every numeric group (after ``log1p`` for heavy-tailed counts) and the item ids of the content
table. ``transform`` turns prepared rows (train.parquet / eval.parquet layout, see ``twotower.data.schema``)
into ``EncodedRows`` (``model/dataset.py``), vectorised. Its state is plain lists/tensors so that it travels inside the
checkpoint and loads with ``torch.load(weights_only=True)``.

User side of a row: user_id, day, dow, hour, USER_BASE, static_* (joined from users.parquet by user_id) and
the (user_id, day) history. Item side: item_id, creator_id, ITEM_BASE, CREATOR_BASE, the content vector.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from twotower.config import ModelConfig
from twotower.data.schema import CREATOR_BASE, ITEM_BASE, USER_BASE
from twotower.model.dataset import EncodedRows
from twotower.model.vocab import CategoryVocab, IdVocab, NumericScaler

# Counts and durations are heavy-tailed: log1p before standardising. Rates, means of fractions and flags are not.
LOG1P = frozenset(
    {
        "user_plays",
        "user_mean_watch_s",
        "item_plays",
        "item_likes",
        "item_shares",
        "item_age_days",
        "item_duration_s",
        "creator_plays",
        "creator_likes",
        "creator_shares",
    }
)
HISTORY_COLUMNS = ("pos_items", "neg_items")
CATEGORY_MIN_COUNT = 5  # rows a categorical static value needs to get its own embedding row


def epoch_days(values: pd.Series | np.ndarray) -> np.ndarray:
    """Calendar days (date, datetime or string) (n,) -> int64 days since 1970-01-01, so joins ignore dtypes."""
    return pd.to_datetime(pd.Series(values)).to_numpy().astype("datetime64[D]").astype(np.int64)


def list_column(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column of int/float lists (numpy arrays, lists or Arrow lists) -> (flat values, offsets [n + 1])."""
    arr = pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):  # empty or all-null column: no values at all
        return np.zeros(0, np.int64), np.zeros(len(arr) + 1, np.int64)
    if pa.types.is_fixed_size_list(arr.type):
        arr = arr.cast(pa.list_(arr.type.value_type))
    arr = arr.fill_null([])
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    return flat, np.concatenate([[0], np.cumsum(lengths)])


def static_log1p(x: np.ndarray) -> list[bool]:
    """Which static columns of (n, c) values to log1p: those non-negative with a long range (counts). Static
    columns have no declared meaning, so this is decided from the training rows' values."""
    with np.errstate(all="ignore"):
        return [bool(np.nanmin(c) >= 0 and np.nanmax(c) > 100) if np.isfinite(c).any() else False for c in x.T]


_USERS_CACHE: list = []  # [(users frame, its rows by user_id)]: the last users table indexed


def _by_user(users: pd.DataFrame) -> pd.DataFrame:
    """``users`` without repeated user ids, indexed by user_id; kept for the last table seen, because a
    streamed epoch joins it once per row group (a drop_duplicates of millions of users each time)."""
    if _USERS_CACHE and _USERS_CACHE[0][0] is users:
        return _USERS_CACHE[0][1]
    indexed = users.drop_duplicates("user_id").set_index("user_id")
    _USERS_CACHE[:] = [(users, indexed)]
    return indexed


def _require(frame: pd.DataFrame, columns: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{what} needs columns {missing}; it has {list(frame.columns)}")


class FeatureSpace:
    """Vocabularies and scalers for the feature groups switched on in ``config`` (see module docstring)."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.users_ = self.items_ = self.creators_ = self.content_ids_ = None
        self.scalers_: dict[str, NumericScaler] = {}
        self.content_scale_ = 1.0
        self.content_dim_ = 0
        self.static_categories_: CategoryVocab | None = None  # categorical static user columns (cat_*)

    @property
    def needs_content(self) -> bool:
        uf = self.config.user_features
        return (
            "content" in self.config.item_features or "pos_mean_hist_emb" in uf or "neg_mean_hist_emb" in uf
        )

    @property
    def uses_creator_id(self) -> bool:
        return "creator" in self.config.item_features and self.config.creator_id_embedding

    # ---- fit ---------------------------------------------------------------------------------------
    def fit(
        self, rows: pd.DataFrame, users: pd.DataFrame | None = None, item_table: pd.DataFrame | None = None
    ) -> FeatureSpace:
        """Fit on training rows (train.parquet layout); ``users`` = users.parquet; ``item_table`` = item_id +
        vector (the content table)."""
        _require(rows, ("user_id", "item_id"), "training rows")
        self.users_ = IdVocab().fit(rows["user_id"].to_numpy())
        self.items_ = IdVocab().fit(rows["item_id"].to_numpy())
        creators = rows["creator_id"].fillna(-1).to_numpy() if "creator_id" in rows else np.empty(0)
        self.creators_ = IdVocab(self.config.creator_min_count).fit(creators[creators >= 0])
        for group, scaler in self.numeric_groups().items():
            _require(rows, scaler.columns, f"feature group '{group}'")
            self.scalers_[group] = scaler.fit(rows)
        if "user_static" in self.config.user_features:
            static = self.static_columns(users)
            categorical = self.categorical_columns(users)
            if categorical:  # codes, not quantities: a vocabulary per column, an embedding in the tower
                self.static_categories_ = CategoryVocab(categorical, min_count=CATEGORY_MIN_COUNT).fit(
                    self._join_static(rows, users, categorical)[0]
                )
            joined = self._join_static(rows, users, static)[0]
            x = joined.to_numpy(dtype=np.float64, na_value=np.nan).reshape(len(joined), len(static))
            self.scalers_["user_static"] = NumericScaler(static, static_log1p(x)).fit(joined)
        if self.needs_content:
            self.fit_content(item_table, rows["item_id"].to_numpy())
        return self

    def numeric_groups(self) -> dict[str, NumericScaler]:
        """Unfitted scalers of the switched-on groups computed by prepare (user_base, item_base, creator)."""
        groups = (("user_base", USER_BASE), ("item_base", ITEM_BASE), ("creator", CREATOR_BASE))
        on = (*self.config.user_features, *self.config.item_features)
        return {g: NumericScaler(list(c), [x in LOG1P for x in c]) for g, c in groups if g in on}

    @staticmethod
    def static_columns(users: pd.DataFrame | None) -> list[str]:
        """The users table's numeric ``static_*`` columns (the 'user_static' group)."""
        if users is None:
            raise ValueError("feature group 'user_static' needs the users table")
        return [c for c in users.columns if c.startswith("static_") and pd.api.types.is_numeric_dtype(users[c])]

    @staticmethod
    def categorical_columns(users: pd.DataFrame) -> list[str]:
        """The users table's ``cat_*`` columns (codes: the 'user_static' group's vocabularies)."""
        return [c for c in users.columns if c.startswith("cat_")]

    def fit_content(self, item_table: pd.DataFrame | None, train_items: np.ndarray) -> None:
        """The content table's ids and dimension, and its scale from the vectors of ``train_items`` (the
        training rows' item ids)."""
        if item_table is None:
            raise ValueError("content / history features need the content item table (item_id, vector)")
        _require(item_table, ("item_id", "vector"), "content item table")
        self.content_ids_ = IdVocab.from_ids(np.unique(item_table["item_id"].to_numpy(dtype=np.int64)))
        vectors = self._vectors(item_table)
        self.content_dim_ = vectors.shape[1]
        # PCA components have arbitrary scale: divide by the root mean square entry so inputs are ~unit.
        # Fitted, like everything here, on the training rows' items only.
        fit = vectors[np.isin(item_table["item_id"].to_numpy(dtype=np.int64), train_items)]
        rms = float(np.sqrt(np.mean(fit.astype(np.float64) ** 2))) if fit.size else 1.0
        self.content_scale_ = rms if rms > 1e-12 else 1.0

    @staticmethod
    def _vectors(item_table: pd.DataFrame) -> np.ndarray:
        flat, offsets = list_column(item_table["vector"])
        dim = int(offsets[1] - offsets[0]) if len(item_table) else 0
        if np.any(np.diff(offsets) != dim):
            raise ValueError("content vectors must all have the same length")
        return flat.astype(np.float32).reshape(len(item_table), dim)

    def content_matrix(self, item_table: pd.DataFrame) -> torch.Tensor:
        """Frozen content table in vocabulary order: [n_content + 1, dim], row 0 (padding) zeros."""
        if self.content_ids_ is None:
            return torch.zeros(1, 1)
        table = torch.zeros(len(self.content_ids_), self.content_dim_)
        rows = self.content_ids_.transform(item_table["item_id"].to_numpy())
        table[torch.as_tensor(rows)] = torch.as_tensor(self._vectors(item_table) / self.content_scale_)
        return table

    @staticmethod
    def _join_static(
        rows: pd.DataFrame, users: pd.DataFrame, static: list[str]
    ) -> tuple[pd.DataFrame, np.ndarray]:
        users = _by_user(users)
        pos = users.index.get_indexer(rows["user_id"].to_numpy())
        joined = users[static].iloc[np.clip(pos, 0, None)].reset_index(drop=True) if len(users) else None
        if joined is None:
            joined = pd.DataFrame(np.nan, index=range(len(rows)), columns=static)
        joined.loc[pos < 0, static] = np.nan
        return joined, (pos >= 0).astype(np.float32)

    # ---- transform ---------------------------------------------------------------------------------
    def transform(
        self,
        rows: pd.DataFrame,
        history: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        side: str = "both",
    ) -> EncodedRows:
        """Rows (train/eval layout) + history.parquet + users.parquet -> ``EncodedRows``. ``label``/``weight``
        default to 0/1 when absent (scoring). ``side`` = "user" or "item" encodes only that tower's inputs,
        so rows need only that side's columns (embedding users or items for an index)."""
        if side not in ("both", "user", "item"):
            raise ValueError(f"side must be 'both', 'user' or 'item', not {side!r}")
        n, user, item = len(rows), side != "item", side != "user"
        cfg, t = self.config, torch.as_tensor
        cols: dict[str, torch.Tensor] = {
            "label": t(rows["label"].to_numpy(np.float32) if "label" in rows else np.zeros(n, np.float32)),
            "weight": t(rows["weight"].to_numpy(np.float32) if "weight" in rows else np.ones(n, np.float32)),
        }
        if user:
            _require(rows, ("user_id",), "user features")
            cols["user_idx"] = t(self.users_.transform(rows["user_id"].to_numpy()))
        if item:
            _require(rows, ("item_id",), "item features")
            cols["item_idx"] = t(self.items_.transform(rows["item_id"].to_numpy()))
            if self.uses_creator_id:  # prepare joins creator_id onto every row (the one place it is joined)
                _require(rows, ("creator_id",), "the creator id embedding")
            creators = rows["creator_id"].fillna(-1).to_numpy() if "creator_id" in rows else np.full(n, -1)
            cols["creator_idx"] = t(self.creators_.transform(creators))
        if user and "context" in cfg.user_features:
            _require(rows, ("dow", "hour"), "feature group 'context'")
            cols["dow"] = t(np.clip(rows["dow"].to_numpy(np.int64), 0, 6))
            cols["hour"] = t(np.clip(rows["hour"].to_numpy(np.int64), 0, 23))
        for group, scaler in self.scalers_.items():
            if (group in cfg.user_features and not user) or (group in cfg.item_features and not item):
                continue
            if group == "user_static":
                if users is None:
                    raise ValueError("feature group 'user_static' needs the users table")
                joined, found = self._join_static(rows, users, scaler.columns)
                cols["user_static"] = t(np.concatenate([scaler.transform(joined), found[:, None]], axis=1))
                if self.static_categories_ is not None:
                    codes = self._join_static(rows, users, self.static_categories_.columns)[0]
                    cols["user_static_cat"] = t(self.static_categories_.transform(codes))
            else:
                _require(rows, scaler.columns, f"feature group '{group}'")
                cols[group] = t(scaler.transform(rows))
        if item and self.content_ids_ is not None:
            cols["content_row"] = t(self.content_ids_.transform(rows["item_id"].to_numpy()))
        pos_hist, neg_hist, cols["hist_row"] = self._history(rows, history if user else None, user)
        return EncodedRows(cols, pos_hist, neg_hist)

    def _history(
        self, rows: pd.DataFrame, history: pd.DataFrame | None, user: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded content-row matrices of the histories the rows need; history 0 is the empty one."""
        uses = {"pos_mean_hist_emb", "neg_mean_hist_emb"} & set(self.config.user_features)
        if not uses or not user:
            empty = torch.zeros(1, 1, dtype=torch.int32)
            return empty, empty, torch.zeros(len(rows), dtype=torch.long)
        if history is None:
            raise ValueError("history features need history.parquet (user_id, day, pos_items, neg_items)")
        _require(rows, ("user_id", "day"), "history features")
        _require(history, ("user_id", "day", *HISTORY_COLUMNS), "history table")
        keys = pd.MultiIndex.from_arrays([history["user_id"].to_numpy(np.int64), epoch_days(history["day"])])
        if not keys.is_unique:
            raise ValueError("history.parquet has several rows for one (user_id, day)")
        wanted = pd.MultiIndex.from_arrays([rows["user_id"].to_numpy(np.int64), epoch_days(rows["day"])])
        found = keys.get_indexer(wanted)
        # Keep only the histories these rows use, renumbered 1..k (0 = empty history, for rows without one).
        needed = np.unique(found[found >= 0])
        remap = np.zeros(len(history), dtype=np.int64)
        remap[needed] = np.arange(1, len(needed) + 1)
        hist_row = np.where(found >= 0, remap[np.clip(found, 0, None)], 0)
        sub = history.iloc[needed]
        mats = [self._pad(sub[c]) for c in HISTORY_COLUMNS]
        return mats[0], mats[1], torch.as_tensor(hist_row)

    def _pad(self, lists: pd.Series) -> torch.Tensor:
        """Lists of item ids (most recent first) -> [k + 1, L] int32 content rows, 0 = padding/unknown item.
        Unknown items are dropped before truncation, so each row holds the ``max_history`` latest known."""
        flat, offsets = list_column(lists)
        lengths = np.diff(offsets)
        owner = np.repeat(np.arange(len(lists)), lengths)
        content = self.content_ids_.transform(flat.astype(np.int64)) if len(flat) else np.zeros(0, np.int64)
        known = content > 0
        owner, content = owner[known], content[known]
        # position of each known item within its own list: running count per owner
        starts = np.searchsorted(owner, np.arange(len(lists)))
        position = np.arange(len(owner)) - starts[owner] if len(owner) else np.zeros(0, np.int64)
        keep = position < self.config.max_history
        width = max(1, int(position[keep].max()) + 1 if keep.any() else 1)
        mat = np.zeros((len(lists) + 1, width), dtype=np.int32)
        mat[owner[keep] + 1, position[keep]] = content[keep]
        return torch.as_tensor(mat)

    # ---- sizes and state -----------------------------------------------------------------------------
    def dims(self) -> dict[str, int]:
        """Sizes the model is built from."""
        return {
            "n_users": len(self.users_),
            "n_items": len(self.items_),
            "n_creators": len(self.creators_),
            "n_content": len(self.content_ids_) if self.content_ids_ is not None else 1,
            "content_dim": self.content_dim_,
            **{f"n_{g}": len(s.columns) + (g == "user_static") for g, s in self.scalers_.items()},
            "user_static_categories": self.static_categories_.sizes() if self.static_categories_ is not None else [],
        }

    def state_dict(self) -> dict:
        """Plain lists and tensors only (loads with ``torch.load(weights_only=True)``)."""
        vocab = {
            k: torch.as_tensor(v.ids_)
            for k, v in (("users", self.users_), ("items", self.items_), ("creators", self.creators_))
        }
        if self.content_ids_ is not None:
            vocab["content_ids"] = torch.as_tensor(self.content_ids_.ids_)
        scalers = {
            g: {
                "columns": list(s.columns),
                "log1p": list(s.log1p),
                "mean": torch.as_tensor(s.mean_),
                "std": torch.as_tensor(s.std_),
            }
            for g, s in self.scalers_.items()
        }
        return {
            "vocab": vocab,
            "scalers": scalers,
            "static_categories": self.static_categories_.values_ if self.static_categories_ is not None else None,
            "content_scale": self.content_scale_,
            "content_dim": self.content_dim_,
        }

    @classmethod
    def from_state_dict(cls, state: dict, config: ModelConfig) -> FeatureSpace:
        space = cls(config)
        vocab = state["vocab"]
        space.users_, space.items_, space.creators_ = (
            IdVocab.from_ids(vocab[k].numpy()) for k in ("users", "items", "creators")
        )
        space.content_ids_ = IdVocab.from_ids(vocab["content_ids"].numpy()) if "content_ids" in vocab else None
        space.scalers_ = {
            g: NumericScaler.from_state(list(s["columns"]), list(s["log1p"]), s["mean"].numpy(), s["std"].numpy())
            for g, s in state["scalers"].items()
        }
        space.content_scale_, space.content_dim_ = float(state["content_scale"]), int(state["content_dim"])
        categories = state.get("static_categories")
        space.static_categories_ = CategoryVocab.from_state(categories) if categories else None
        return space
