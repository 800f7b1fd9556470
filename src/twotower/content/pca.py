"""PCA of content vectors to a fixed number of components, fitted on the training window's items only.

``fit`` sees only training items that have content; ``transform`` applies the same projection to every
item (training, validation-only, new). Items without content are mapped to the origin (the training mean),
i.e. "no information", rather than to the projection of a zero vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA


@dataclass
class ContentPCA:
    """A fitted projection: ``mean`` (d,), ``components`` (k, d), explained variance ratio (k,)."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray, n_components: int, seed: int = 0) -> ContentPCA:
        """Fit on ``vectors`` (n_train, d); needs ``n_train >= n_components`` and ``d >= n_components``."""
        n, d = vectors.shape
        if d < n_components:
            raise ValueError(
                f"PCA to {n_components} components needs content vectors with at least {n_components} "
                f"dimensions; the encoder gives {d}. Lower content.pca_components or use a richer encoder."
            )
        if n < n_components:
            raise ValueError(
                f"PCA to {n_components} components needs at least {n_components} training-window items with "
                f"content; there are {n}. Lower content.pca_components or use a longer training window."
            )
        pca = PCA(n_components=n_components, svd_solver="full", random_state=seed)
        pca.fit(vectors.astype(np.float64))
        components = pca.components_
        # fix each component's sign (largest |loading| positive) so results do not depend on the solver
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        signs[signs == 0] = 1.0
        return cls(pca.mean_, components * signs[:, None], pca.explained_variance_ratio_)

    def transform(self, vectors: np.ndarray, has_content: np.ndarray | None = None) -> np.ndarray:
        """(n, d) -> (n, k) float32; rows with ``has_content = False`` become zeros."""
        out = ((vectors.astype(np.float64) - self.mean) @ self.components.T).astype(np.float32)
        if has_content is not None:
            out[~np.asarray(has_content, dtype=bool)] = 0.0
        return out

    @property
    def explained_variance_total(self) -> float:
        return float(self.explained_variance_ratio.sum())
