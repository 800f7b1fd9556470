"""CategoryVocab: codes by hand, and the few-rows path (dict lookups, serving) equal to the many-rows path."""

from __future__ import annotations

import numpy as np
import pandas as pd

from twotower.model.vocab import FEW_ROWS, CategoryVocab

TRAIN = pd.DataFrame(
    {
        "cat_int": [3, 3, 7, -124, 3, 7],
        "cat_float": [1.0, 2.5, 1.0, np.nan, 1.0, 2.5],
        "cat_text": [" a", "b ", "a", None, "c", "b"],
    }
)


def test_codes_by_hand():
    vocab = CategoryVocab(["cat_int", "cat_float", "cat_text"], min_count=2).fit(TRAIN)
    # values compared as stripped strings, sorted; a value seen fewer than min_count times has no code
    assert vocab.values_ == {"cat_int": ["3", "7"], "cat_float": ["1.0", "2.5"], "cat_text": ["a", "b"]}
    rows = pd.DataFrame({"cat_int": [7, -124, 3], "cat_float": [2.5, np.nan, 9.0], "cat_text": ["b", "a ", "zz"]})
    np.testing.assert_array_equal(vocab.transform(rows), [[2, 2, 2], [0, 0, 1], [1, 0, 0]])
    # fitted again (on rows where 7 is the only known int), the few-rows lookup follows the new vocabulary
    vocab.fit(TRAIN.assign(cat_int=[7, 7, 7, 7, 7, 7]))
    np.testing.assert_array_equal(vocab.transform(rows)[:, 0], [1, 0, 0])


def test_few_rows_and_many_rows_give_the_same_codes():
    vocab = CategoryVocab(["cat_int", "cat_float", "cat_text"], min_count=1).fit(TRAIN)
    rng = np.random.default_rng(0)
    n = 5 * FEW_ROWS
    many = pd.DataFrame(
        {
            "cat_int": rng.choice([3, 7, -124, 99], n),
            "cat_float": rng.choice([1.0, 2.5, np.nan, 4.0], n),
            "cat_text": rng.choice([" a", "b", "c ", "new", None], n),
        }
    )
    whole = vocab.transform(many)  # the get_indexer path
    assert whole.min() == 0 and whole.max() >= 3  # unknown, missing and known values all occur
    parts = np.concatenate([vocab.transform(many.iloc[i : i + 7]) for i in range(0, n, 7)])  # the dict path
    np.testing.assert_array_equal(parts, whole)
    assert vocab.transform(many.head(0)).shape == (0, 3)
    as_float32 = many.assign(cat_float=many["cat_float"].astype(np.float32))  # NaN of another float type
    np.testing.assert_array_equal(vocab.transform(as_float32.head(FEW_ROWS)), whole[:FEW_ROWS])
