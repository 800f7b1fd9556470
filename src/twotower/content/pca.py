"""PCA of content vectors to a fixed number of components, fitted on the training window's items only.

``fit`` sees only training items that have content; ``transform`` applies the same projection to every
item (training, validation-only, new). Items without content are mapped to the origin (the training mean),
i.e. "no information", rather than to the projection of a zero vector.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA


class ContentPCA:
    """PCA to ``n_components`` (scikit-learn convention: ``fit`` returns the fitted object).

    Learned state: ``mean_`` (d,), ``components_`` (k, d), ``explained_variance_ratio_`` (k,).
    """

    def __init__(self, n_components: int, seed: int = 0) -> None:
        self.n_components = n_components
        self.seed = seed

    def fit(self, vectors: np.ndarray) -> ContentPCA:
        """Fit on ``vectors`` (n_train, d); needs ``n_train >= n_components`` and ``d >= n_components``."""
        n_components = self.n_components
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
        pca = PCA(n_components=n_components, svd_solver="full", random_state=self.seed)
        pca.fit(vectors.astype(np.float64))
        components = pca.components_
        # fix each component's sign (largest |loading| positive) so results do not depend on the solver
        signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
        signs[signs == 0] = 1.0
        self.mean_ = pca.mean_
        self.components_ = components * signs[:, None]
        self.explained_variance_ratio_ = pca.explained_variance_ratio_
        return self

    def transform(self, vectors: np.ndarray, has_content: np.ndarray | None = None) -> np.ndarray:
        """(n, d) -> (n, k) float32; rows with ``has_content = False`` become zeros."""
        out = ((vectors.astype(np.float64) - self.mean_) @ self.components_.T).astype(np.float32)
        if has_content is not None:
            out[~np.asarray(has_content, dtype=bool)] = 0.0
        return out

    @property
    def explained_variance_total(self) -> float:
        return float(self.explained_variance_ratio_.sum())
