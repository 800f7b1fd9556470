"""Content inputs: the control-character rule of item text."""

from __future__ import annotations

import pandas as pd

from twotower.content.encoder import clean_text, text_of


def test_control_characters_are_replaced_or_removed() -> None:
    values = pd.Series(["a\x00b", "x\ty\nz\r", "\x85c\x9fd\x7f\x1b", None, " \x00 ", "猫\u200d猫", "e\x0bf\x0cg"])
    # tab, newline, CR, VT, FF -> space; other C0/C1 controls and DEL removed; others kept; then stripped
    assert clean_text(values).tolist() == ["ab", "x y z", "cd", "", "", "猫\u200d猫", "e f g"]
    items = pd.DataFrame({"caption": ["cat\x00 video", "\x00"], "cover_text": ["c\nd", None]})
    assert text_of(items, ("caption", "cover_text")) == ["cat video\nc d", ""]
