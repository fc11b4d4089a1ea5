"""STS family: Spearman (x100) of each pair's similarity against gold, Pearson beside it.

The similarity is what a server storing the precision computes (bench/precisions.py; STS has no search, so each
sentence's stored form is compared with the other's):
- fp32: the cosine of the two float vectors (4 bytes per dim each).
- int8: each sentence stored as int8 codes (1 byte per dim; ranges calibrated on the task's sentences, its one pool
  of texts, whatever `int8_calibration` says), the cosine of the two DECODED vectors (bucket midpoints).
- binary: the sign bits (dim / 8 bytes), 1 - hamming / dim, which equals (1 + cosine) / 2 of the +-1 sign vectors.
  A head with multi-bit codes (bebr) is scored by the cosine of the codes' reconstructions: the symmetric distance
  of its paper, normalized (bench/transforms.BinaryCodes).
The binary+rescore precisions are search strategies: STS has no search, so it skips them (TaskMeta.precisions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr

from bench.catalog import TASK_META, TaskMeta
from bench.data.sts import STSPairs, load_sickr, load_sts_year, load_stsb, sentence_identities
from bench.precisions import scored_by
from bench.spec import EvalSpec
from bench.tasks import TASKS, Task
from bench.transforms import BinaryCodes, head_codes, truncate


def sts_metrics(similarity: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Pure: Spearman and Pearson correlation x100."""
    return {"spearman": 100 * float(spearmanr(similarity, gold).statistic),
            "pearson": 100 * float(pearsonr(similarity, gold).statistic)}


def pair_similarity(vectors: np.ndarray, left: np.ndarray, right: np.ndarray, precision: str,
                    codes: BinaryCodes | None = None) -> np.ndarray:
    """Similarity of each (left, right) pair of rows of `vectors`, computed at `precision` (its record's form);
    `codes`: the head's own codes of those rows where it makes them."""
    return scored_by(precision, "sts").form.pair_similarity(vectors, left, right, codes)


@dataclass(frozen=True)
class STSTask(Task):
    meta: TaskMeta
    loader: Callable[[Path], STSPairs]

    def load(self, data_dir: Path, spec: EvalSpec) -> STSPairs:
        return self.loader(data_dir).head(spec.max_pairs)

    def texts(self, data: STSPairs, spec: EvalSpec) -> dict[str, tuple[list[str], int]]:
        """Each distinct sentence once: name -> (texts, max token length)."""
        unique = sorted(set(data.sentences1) | set(data.sentences2))
        return {"sentences": (unique, spec.max_seq_len)}

    def role(self, name: str) -> str | None:
        """STS sentences have no query/document role: they get what SentenceTransformer.encode(texts) prepends."""
        return None

    def prepare(self, data: STSPairs, texts: dict) -> dict:
        index = {t: i for i, t in enumerate(texts["sentences"][0])}
        return {"left": np.array([index[s] for s in data.sentences1]),
                "right": np.array([index[s] for s in data.sentences2])}

    def score_cell(self, data: STSPairs, arrays: dict, aux: dict, layer: int, dim: int, precision: str,
                   spec: EvalSpec) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Metrics of one cell, and per-example values (the pair similarities) for statistics."""
        vectors = truncate(arrays["sentences"][layer - 1], dim, spec.normalize)
        takes_codes = scored_by(precision, "sts").form.takes_head_codes
        codes = head_codes(arrays["sentences"], layer, dim) if takes_codes else None
        sim = pair_similarity(vectors, aux["left"], aux["right"], precision, codes)
        return sts_metrics(sim, data.scores), {"similarity": sim}

    def gold(self, data: STSPairs) -> dict[str, np.ndarray]:
        """Stored once per run: the gold scores, and each pair's two sentences (`sentence_identities`), which the
        statistics resample and pair runs by."""
        left, right = sentence_identities(data)
        return {"gold": data.scores, "left_sentence": left, "right_sentence": right}


TASKS.register("stsb")(STSTask(TASK_META["stsb"], lambda d: load_stsb(d, "test")))
TASKS.register("sickr")(STSTask(TASK_META["sickr"], load_sickr))
for _year in (12, 13, 14, 15, 16):
    TASKS.register(f"sts{_year}")(STSTask(TASK_META[f"sts{_year}"], lambda d, y=_year: load_sts_year(d, y)))
