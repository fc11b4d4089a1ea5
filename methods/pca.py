"""`pca`: per layer, the principal components of the frozen backbone's vectors of the fit set (the suite's training
sentences, methods/_heads.py); the d-dim cell is the first d components. The no-training baseline against prefix
truncation: the best rank-d linear map of the fit set in the squared-error sense (Eckart-Young).

Per layer l with fit vectors X (n x H, the pooled vectors as evaluation sees them, before truncation): mean
mu = mean of the rows, X - mu = U S V^T (SVD, float64), components = the rows of V^T (largest singular value first,
each signed so that its largest-magnitude entry is positive: the convention of sklearn's PCA). The head is a
LinearHead: y = x @ components^T - mu @ components^T, so y[:d] holds the first d principal-component scores; the
evaluation then L2-normalizes as for every method. Deterministic: the seed changes nothing. No whitening (it would
weigh every component alike and undo the ordering by variance that truncation relies on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench import BenchError
from bench.heads import LinearHead
from bench.spec import Budget
from methods import METHODS
from methods._heads import FIT_SENTENCES, HeadMethod, check_count


def principal_components(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (H,), components (min(n, H), H)) of the rows of x, sklearn's sign convention."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    return mean, vt * signs[:, None]


@METHODS.register("pca")
class PCA(HeadMethod):
    needs_steps = False  # fitted in closed form on the training set: nothing is trained by gradient

    @dataclass(frozen=True)
    class Params:
        fit_sentences: int = FIT_SENTENCES  # the fit set: the first n distinct training texts

        def __post_init__(self):
            check_count("pca", "fit_sentences", self.fit_sentences)

    def fit(self, params: Params, vectors: np.ndarray, budget: Budget, seed: int) -> tuple[LinearHead, list]:
        layers, n, width = vectors.shape
        if n < width:
            raise BenchError(f"pca needs at least {width} fit sentences for {width} components, got {n}; raise "
                             "fit_sentences or use a larger training set")
        weights, biases = {}, {}
        for layer in range(1, layers + 1):
            mean, components = principal_components(vectors[layer - 1])
            weights[layer] = components.T.astype(np.float32)
            biases[layer] = (-mean @ components.T).astype(np.float32)
        return LinearHead(weights, biases), []
