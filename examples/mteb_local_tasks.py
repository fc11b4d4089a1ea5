"""mteb task classes over local data: how to add a private task, and what the tests run offline.

    bench run --suite smoke --tasks mteb:examples/mteb_local_tasks.py:TwitterParaphrasePairs

A task is mteb's own declaration (a TaskMetadata) plus a `load_data` that sets `self.dataset`; bench slices every
(layer, dim, precision) cell out of one encode and lets mteb score each (bench/tasks/mteb.py). The data are small
slices of ../shared/data (the layout `bench data fetch` writes; found through $BENCH_DATA_DIR, else ./data), a few
hundred texts each, so a whole grid runs in seconds: checks of the machinery, not benchmark figures.
"""

from __future__ import annotations

import gzip
from collections import defaultdict

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.task_metadata import TaskMetadata

from bench.data import resolve_data_dir


def _metadata(name: str, kind: str, main_score: str, description: str, path: str) -> TaskMetadata:
    return TaskMetadata(
        name=name, description=description, dataset={"path": path, "revision": "local-slice-1"}, reference=None,
        type=kind, category="t2t", modalities=["text"], eval_splits=["test"], eval_langs=["eng-Latn"],
        main_score=main_score, date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
        dialect=None, sample_creation="found", bibtex_citation="")


def _tsv_rows(path) -> list[list[str]]:
    """The rows after the header of an unquoted TSV (split on tabs: the sentences hold quote characters)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as fh:
        return [line.split("\t") for line in fh.read().splitlines()[1:] if line]


class TwitterParaphrasePairs(AbsTaskPairClassification):
    """Is the second tweet a paraphrase of the first? The first 100 paraphrase and 100 other pairs of the Twitter
    URL Corpus train split (MTEB's TwitterURLCorpus scores its test split, which is not in the local data)."""

    metadata = _metadata("TwitterParaphrasePairsLocal", "PairClassification", "max_ap",
                         "Twitter URL Corpus train pairs, 100 paraphrases and 100 not", "local/twitter_url_corpus")
    n_per_label = 100

    def load_data(self, **kwargs) -> None:
        rows = _tsv_rows(resolve_data_dir() / "twitter_url_corpus" / "pairs.tsv.gz")
        pairs = [r for label in "10" for r in [r for r in rows if r[2] == label][:self.n_per_label]]
        self.dataset = DatasetDict({"test": Dataset.from_dict({
            "sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs],
            "labels": [int(p[2]) for p in pairs]})})
        self.data_loaded = True


def _sts_sentences(sources: tuple[str, ...], per_source: int) -> dict[str, list[str]]:
    """The first `per_source` distinct first sentences of each SemEval STS source, over the years in order."""
    picked: dict[str, dict[str, None]] = defaultdict(dict)
    for year in (12, 13, 14, 15, 16):
        for source, _, sentence, _ in _tsv_rows(resolve_data_dir() / "sts12-16" / "normalized" / f"sts{year}.tsv"):
            if source in sources and len(picked[source]) < per_source:
                picked[source][sentence] = None
    return {source: list(picked[source]) for source in sources}


class StsSourceClassification(AbsTaskClassification):
    """Which corpus is a sentence from: five SemEval STS sources (news headlines, image captions, video
    descriptions, forum answers, news), 30 sentences each to train mteb's logistic regression (8 per label, 10
    draws) and the next 30 each to test it."""

    metadata = _metadata("StsSourceClassificationLocal", "Classification", "accuracy",
                         "SemEval STS 2012-2016 sentences classified by their source corpus", "local/sts12-16")
    sources = ("headlines", "images", "MSRvid", "answers-forums", "deft-news")

    def load_data(self, **kwargs) -> None:
        by_source = _sts_sentences(self.sources, 60)
        part = {"train": slice(0, 30), "test": slice(30, 60)}
        self.dataset = DatasetDict({split: Dataset.from_dict({
            "text": [s for source in self.sources for s in by_source[source][rows]],
            "label": [i for i, source in enumerate(self.sources) for _ in by_source[source][rows]]})
            for split, rows in part.items()})
        self.data_loaded = True


class TwitterStoryClustering(AbsTaskClustering):
    """Which news story is a tweet about: the first 20 stories of the Twitter URL Corpus train split with at least
    9 other tweets linking the same article, 10 tweets each, clustered by mteb's k-means, scored by V-measure."""

    metadata = _metadata("TwitterStoryClusteringLocal", "Clustering", "v_measure",
                         "Twitter URL Corpus train tweets clustered by the news story they link",
                         "local/twitter_url_corpus")
    stories, per_story = 20, 10
    max_fraction_of_documents_to_embed = None  # every tweet (mteb's default embeds 4% of a large set)
    max_documents_per_cluster = 200  # each of mteb's 10 k-means runs draws 200 tweets (its default: 16,384)

    def load_data(self, **kwargs) -> None:
        by_story: dict[str, dict[str, None]] = defaultdict(dict)
        for anchor, other, _ in _tsv_rows(resolve_data_dir() / "twitter_url_corpus" / "pairs.tsv.gz"):
            by_story[anchor].update({anchor: None, other: None})
        seen: set[str] = set()
        sentences, labels = [], []
        for anchor, tweets in by_story.items():  # stories in file order; a tweet in two stories is left out
            tweets = [t for t in tweets if t not in seen][:self.per_story]
            if len(tweets) == self.per_story:
                seen.update(tweets)
                sentences += tweets
                labels += [anchor] * len(tweets)
            if len(sentences) == self.stories * self.per_story:
                break
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentences": sentences, "labels": labels})})
        self.data_loaded = True
