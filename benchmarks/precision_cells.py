"""Prints, from committed results alone, the cells that show what each precision means (issue 22): `pca` at (3, 64)
on STS-B at every precision, `pretrained` at full size on SciFact at every precision with the bytes a query reads
per document and the index size, the training examples removed for sharing a text with an evaluation set, and the
provenance of every row (git_sha, git_dirty).

    python benchmarks/precision_cells.py [--results-dir results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.results import load_results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    frame = load_results(parser.parse_args(argv).results_dir)
    print(f"{len(frame)} rows; git_sha {sorted(frame.git_sha.unique())}; git_dirty {sorted(frame.git_dirty.unique())}")
    minilm = frame[frame.backbone == "minilm"]
    pca = minilm[(minilm.method == "pca") & (minilm.task == "stsb") & (minilm.layer == 3) & (minilm.dim == 64)
                 & (minilm.metric == "spearman")]
    print("pca (3, 64) STS-B Spearman, mean over seeds:")
    print(pca.groupby("precision").score.mean().round(2).to_string())
    full = minilm[(minilm.method == "pretrained") & (minilm.task == "scifact") & (minilm.layer == 6)
                  & (minilm.dim == 384)]
    table = full[full.metric == "ndcg@10"].groupby("precision")[["bytes_per_vector", "score"]].mean()
    table["index_bytes"] = full[full.metric == "index_bytes"].groupby("precision").score.mean()
    print("pretrained (6, 384) SciFact nDCG@10, bytes per document and index bytes:")
    print(table.round(2).to_string())
    removed = frame[frame.metric.isin(["train_examples_removed", "smae_sentences_removed"])]
    print(removed.groupby("metric").score.unique().to_string())


if __name__ == "__main__":
    main()
