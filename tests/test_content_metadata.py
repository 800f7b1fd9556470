"""metadata encoder: hand-checked vectors, bucketing of rare ids, and the KuaiRand dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twotower.config import MetadataEncoderConfig
from twotower.content.metadata import MetadataEncoder, _hash_bucket

KUAIRAND_ITEMS = (
    Path(__file__).resolve().parents[1] / "../shared/data/kuairand-pure/video_features_basic_pure.csv"
)


def kuairand_items(path: Path = KUAIRAND_ITEMS) -> pd.DataFrame:
    """Canonical items from KuaiRand's video_features_basic file."""
    raw = pd.read_csv(path)
    return raw.rename(
        columns={
            "video_id": "item_id",
            "author_id": "creator_id",
            "upload_dt": "upload_date",
            "video_duration": "duration_ms",
            "server_width": "width",
            "server_height": "height",
            "tag": "tags",
        }
    ).drop(columns=["visible_status"])


def small_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "creator_id": [10, 10, 11, None],
            "duration_ms": [10_000.0, 60_000.0, None, 1_000.0],
            "video_type": ["NORMAL", "AD", "NORMAL", None],
            "upload_type": ["Web", "Web", "Kmovie", "Web"],
            "music_id": [7, 7, 8, 9],
            "music_type": [9.0, 9.0, None, 4.0],
            "tags": ["1,2", "2", None, "3"],
            "width": [720.0, 1280.0, 720.0, None],
            "height": [1280.0, 720.0, 720.0, None],
        }
    )


def row(encoder: MetadataEncoder, vector: np.ndarray) -> dict[str, float]:
    """The non-zero entries of one vector by column name."""
    return {c: round(float(v), 4) for c, v in zip(encoder.columns, vector, strict=True) if v != 0}


def test_hand_checked_vectors() -> None:
    items = small_items()
    enc = MetadataEncoder(MetadataEncoderConfig(min_count=2, rare_buckets=2, duration_bins=4)).fit(items)
    out = enc.encode(items, progress=False)
    assert out.vectors.shape == (4, len(enc.columns)) and out.has_content.all()
    # log(1 + s) for 10 s, 60 s, 1 s: mean and std over the three known durations
    logs = np.log1p([10.0, 60.0, 1.0])
    mean, std = logs.mean(), logs.std()
    lo, hi = np.log1p(1.0), np.log1p(1200.0)
    bin_of = lambda s: int(np.clip((np.log1p(s) - lo) / (hi - lo) * 4, 0, 3))  # noqa: E731
    rare = lambda name, v: f"{name}=<rare:{_hash_bucket(np.array([v]), 2)[0]}>"  # noqa: E731
    assert row(enc, out.vectors[0]) == {
        "tag=1": 1.0,
        "tag=2": 1.0,
        "video_type=NORMAL": 1.0,
        "upload_type=Web": 1.0,
        "music_type=9": 1.0,
        "creator_id=10": 1.0,  # 2 items >= min_count 2
        "music_id=7": 1.0,
        "log_duration": round((np.log1p(10.0) - mean) / std, 4),
        f"duration_bin={bin_of(10.0)}": 1.0,
        "log_aspect": round(np.log(720 / 1280), 4),
        "orientation=portrait": 1.0,
    }
    fourth = row(enc, out.vectors[3])
    assert fourth["tag=3"] == 1.0 and fourth["video_type=<missing>"] == 1.0
    assert fourth["creator_id=<missing>"] == 1.0 and fourth[rare("music_id", 9)] == 1.0
    assert fourth["aspect=<missing>"] == 1.0 and "log_aspect" not in fourth
    third = row(enc, out.vectors[2])
    assert (
        third["tag=<missing>"] == 1.0 and third["duration=<missing>"] == 1.0 and "log_duration" not in third
    )
    assert third[rare("creator_id", 11)] == 1.0 and third["orientation=square"] == 1.0
    assert row(enc, out.vectors[1])["orientation=landscape"] == 1.0


def test_vocabulary_comes_from_fit_items_only() -> None:
    items = small_items()
    enc = MetadataEncoder(MetadataEncoderConfig(min_count=1)).fit(items.iloc[:2])
    new = pd.DataFrame({"item_id": [9], "tags": ["1,99"], "video_type": ["NEW"], "creator_id": [10]})
    vector = row(enc, enc.encode(new, progress=False).vectors[0])
    assert vector["tag=1"] == 1.0 and vector["tag=<other>"] == 1.0 and vector["video_type=<other>"] == 1.0
    assert "tag=99" not in enc.columns and vector["creator_id=10"] == 1.0


def test_encode_before_fit_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        MetadataEncoder(MetadataEncoderConfig()).encode(small_items())


@pytest.mark.realdata
def test_kuairand_dimension_exceeds_128() -> None:
    if not KUAIRAND_ITEMS.is_file():
        pytest.skip(f"KuaiRand data not found at {KUAIRAND_ITEMS}")
    items = kuairand_items()
    enc = MetadataEncoder(MetadataEncoderConfig()).fit(items)
    out = enc.encode(items, progress=False)
    assert out.vectors.shape[0] == len(items) == 7583
    assert out.vectors.shape[1] > 128  # the seed config's PCA 128 must work
    assert np.isfinite(out.vectors).all() and out.has_content.all()
