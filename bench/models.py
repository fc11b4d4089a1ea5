"""Known public elastic embedding models: one declarative, frozen entry each, with where every fact came from.

`bench run --backbone <name>` loads the entry's hub id at its pinned revision and serves it as the entry says:
its own sentence-transformers configuration (pooling, modules after pooling, max sequence length) plus what the
entry adds on top: the prompt of each text role (`query`, `document`, and `default`, which STS and any text
without a role gets) and any post-pool step the authors apply outside that configuration (`layer_norm`:
nomic-embed-text-v1.5's parameter-free layer norm before slicing). The trained (layer, dim) cells are marked as
targets of the `pretrained` method, so reports box them.

Facts were read from public copies of the models' configuration files, model cards and mteb's ModelMeta records
(mteb 2.26, mteb/models/model_implementations/*.py, which pin the revisions); the hub itself is not reachable
here. `sources` says where each fact came from; `unverified` names the facts no source confirmed (they are the
best reading of the model card, and `bench run` checks the pooling against the downloaded configuration, so a
wrong one fails loudly rather than scoring a different model). Torch-free: `bench ls` and specs read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import product

from bench import BenchError
from bench.spec import POOLINGS, ROLES

POST_MODULES = ("Dense", "LayerNorm", "Normalize")  # sentence-transformers modules after pooling
EXTRA_STEPS = ("layer_norm",)  # post-pool steps an entry adds outside the model's own configuration
FACTS = ("revision", "license", "remote_code", "shape", "pooling", "modules", "prompts", "extra", "trained")


@dataclass(frozen=True)
class PublicModel:
    """One public model as its authors serve it. `modules`: the sentence-transformers modules after the
    Transformer, in order (Pooling first). `prompts`: role -> prompt text ("" for none). `trained_layers` x
    `trained_dims`, or the explicit `trained_cells` where only some pairs were trained (Starbucks' diagonal)."""

    name: str
    hub_id: str
    revision: str | None
    license: str
    needs_remote_code: bool
    num_layers: int
    width: int  # dims the model serves (after its Dense modules)
    pooling: str
    modules: tuple[str, ...]
    prompts: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()
    trained_layers: tuple[int, ...] = ()
    trained_dims: tuple[int, ...] = ()
    trained_cells: tuple[tuple[int, int], ...] = ()
    sources: tuple[tuple[str, str], ...] = ()  # fact -> where it came from
    unverified: tuple[str, ...] = ()  # facts no source confirmed
    description: str = ""
    notes: str = ""

    def cells(self) -> tuple[tuple[int, int], ...]:
        """The (layer, dim) pairs the model was trained for."""
        if self.trained_cells:
            return self.trained_cells
        return tuple(sorted(product(self.trained_layers, self.trained_dims)))

    def role_prompts(self) -> dict[str, str]:
        return {role: dict(self.prompts).get(role, "") for role in ROLES}

    def summary(self) -> str:
        dims = sorted({d for _, d in self.cells()})
        layers = sorted({layer for layer, _ in self.cells()})
        trained = f"trained dims {','.join(map(str, dims))} at layers {','.join(map(str, layers))}"
        remote = "; needs --trust-remote-code" if self.needs_remote_code else ""
        revision = (self.revision or "unpinned")[:7]
        return (f"{self.hub_id}@{revision}, {self.num_layers} layers x {self.width}, {self.pooling} pooling"
                f"{''.join(' + ' + m for m in self.modules[1:])}, {trained}, {self.license}{remote}")


def validate(entry: PublicModel) -> None:
    """Every fact well formed and inside the model; each fact sourced or marked unverified. One error line."""
    def fail(problem: str):
        raise BenchError(f"registry entry {entry.name!r}: {problem}")

    if entry.hub_id.count("/") != 1:
        fail(f"hub id {entry.hub_id!r} is not owner/name")
    if entry.revision is not None and not re.fullmatch(r"[0-9a-f]{40}", entry.revision):
        fail(f"revision {entry.revision!r} is not a 40-digit commit")
    if entry.revision is None and "revision" not in entry.unverified:
        fail("an unpinned revision must be listed in `unverified`")
    if entry.pooling not in POOLINGS:
        fail(f"unknown pooling {entry.pooling!r}; choose from {', '.join(POOLINGS)}")
    if not entry.modules or entry.modules[0] != "Pooling" or any(m not in POST_MODULES for m in entry.modules[1:]):
        fail(f"modules {entry.modules} must be Pooling followed by any of {', '.join(POST_MODULES)}")
    for role, _ in entry.prompts:
        if role not in ROLES:
            fail(f"unknown prompt role {role!r}; roles are {', '.join(ROLES)}")
    for step in entry.extra:
        if step not in EXTRA_STEPS:
            fail(f"unknown extra step {step!r}; known: {', '.join(EXTRA_STEPS)}")
    if not entry.cells():
        fail("no trained (layer, dim) cell")
    for layer, dim in entry.cells():
        if not (1 <= layer <= entry.num_layers and 1 <= dim <= entry.width):
            fail(f"trained cell ({layer}, {dim}) is outside the model ({entry.num_layers} layers x {entry.width})")
    sourced, unverified = dict(entry.sources), set(entry.unverified)
    for fact in FACTS:
        if fact == "extra" and not entry.extra:
            continue  # no step outside the model's configuration: nothing to source
        if fact not in sourced and fact not in unverified:
            fail(f"fact {fact!r} has no source and is not marked unverified")
    for fact in set(sourced) | unverified:
        if fact not in FACTS:
            fail(f"unknown fact {fact!r}; facts are {', '.join(FACTS)}")


MTEB = "mteb 2.26 ModelMeta (mteb/models/model_implementations/{})"
_STARBUCKS_DIAGONAL = ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))
_SEARCH_PASSAGES = "Represent this sentence for searching relevant passages: "

ENTRIES = (
    PublicModel(
        "nomic-embed-text-v1.5", "nomic-ai/nomic-embed-text-v1.5", "b0753ae76394dd36bcfb912a46018088bca48be0",
        "apache-2.0", True, 12, 768, "mean", ("Pooling",),
        prompts=(("default", "classification: "), ("document", "search_document: "), ("query", "search_query: ")),
        extra=("layer_norm",), trained_layers=(12,), trained_dims=(64, 128, 256, 512, 768),
        sources=(("revision", MTEB.format("nomic_models.py")), ("license", MTEB.format("nomic_models.py")),
                 ("remote_code", "model card usage and mteb loader: trust_remote_code=True"),
                 ("shape", "width 768: mteb embed_dim; 12 blocks: the Nomic Embed technical report"),
                 ("pooling", "model card transformers usage (mean_pooling)"),
                 ("prompts", "model card task prefixes; default (STS, classification) is 'classification: ' as "
                             "contrastors eval_mteb.py L142-159, quoted by mteb nomic_models.py"),
                 ("extra", "model card and mteb nomic_models.py: F.layer_norm before slicing, then L2"),
                 ("trained", "model card: MTEB by dimension 768/512/256/128/64 (Matryoshka)")),
        unverified=("modules",),
        description="Matryoshka dims at the last layer; a parameter-free layer norm before slicing",
        notes="modules: whether its modules.json has a Normalize after Pooling was not seen (it changes nothing: "
              "the layer norm and L2 after slicing follow)"),
    PublicModel(
        "mxbai-embed-2d-large-v1", "mixedbread-ai/mxbai-embed-2d-large-v1", "7e639ca8e344af398876ead3b19ec3c0b9068f49",
        "apache-2.0", False, 24, 1024, "cls", ("Pooling",), prompts=(("query", _SEARCH_PASSAGES),),
        trained_layers=(24,), trained_dims=(1024,),
        sources=(("revision", MTEB.format("mixedbread_ai_models.py")),
                 ("license", MTEB.format("mixedbread_ai_models.py")), ("remote_code", "BERT-large architecture"),
                 ("shape", "mixedbread docs: 24 layers, embedding dimension 1024"),
                 ("pooling", "AnglE docs: AnglE.from_pretrained('mixedbread-ai/mxbai-embed-2d-large-v1', "
                             "pooling_strategy='cls')"),
                 ("prompts", "mixedbread docs: retrieval queries get 'Represent this sentence for searching "
                             "relevant passages: ', other texts none")),
        unverified=("modules", "trained"),
        description="2D Matryoshka (layers x dims), CLS pooling",
        notes="trained: the 2D loss's layer and dim lists were not found; only the full cell is marked. The docs "
              "recommend layers 20-24 and dims down to 1024/16"),
    PublicModel(
        "Qwen3-Embedding-0.6B", "Qwen/Qwen3-Embedding-0.6B", "b22da495047858cce924d27d76261e96be6febc0",
        "apache-2.0", False, 28, 1024, "lasttoken", ("Pooling", "Normalize"),
        prompts=(("query", "Instruct: Given a web search query, retrieve relevant passages that answer the query"
                           "\nQuery:"),),
        trained_layers=(28,), trained_dims=(1024,),
        sources=(("revision", MTEB.format("qwen3_models.py")), ("license", MTEB.format("qwen3_models.py")),
                 ("remote_code", "Qwen3 architecture is in transformers"),
                 ("shape", "config.json as quoted by public test fixtures: 28 layers, hidden 1024"),
                 ("pooling", "1_Pooling/config.json: pooling_mode_lasttoken true, include_prompt true"),
                 ("modules", "modules.json as quoted: Transformer, 1_Pooling, 2_Normalize"),
                 ("prompts", "config_sentence_transformers.json as quoted: query instruction, document '', "
                             "default_prompt_name null")),
        unverified=("trained",),
        description="a decoder embedder: last-token pooling with left padding, instruction-prefixed queries",
        notes="trained: the card says MRL with user-defined dims 32..1024 but names no trained list; only the "
              "full cell is marked"),
    PublicModel(
        "EmbeddingGemma-300m", "google/embeddinggemma-300m", "64614b0b8b64f0c6c1e52b07e4e9a4e8fe4d2da2",
        "gemma", False, 24, 768, "mean", ("Pooling", "Dense", "Dense", "Normalize"),
        prompts=(("document", "title: none | text: "), ("query", "task: search result | query: ")),
        trained_layers=(24,), trained_dims=(128, 256, 512, 768),
        sources=(("revision", MTEB.format("google_embeddinggemma.py")),
                 ("license", MTEB.format("google_embeddinggemma.py")),
                 ("remote_code", "Gemma3TextModel is in transformers"),
                 ("shape", "config.json as checked by a public conversion script: 24 layers, hidden 768"),
                 ("pooling", "1_Pooling/config.json as checked there: mean, include_prompt true"),
                 ("modules", "modules.json as checked there: Pooling, Dense 768->3072, Dense 3072->768 (no bias, "
                             "identity), Normalize"),
                 ("prompts", "ai.google.dev EmbeddingGemma sentence-transformers guide prompts (query, document), "
                             "quoted alike by several public projects"),
                 ("trained", "model card: MRL dims 768, 512, 256, 128")),
        description="bidirectional Gemma 3; mean pooling then two Dense layers and L2",
        notes="prompts: the model also ships task prompts (e.g. 'STS': 'task: sentence similarity | query: '); "
              "pass --prompts default=@STS to use it for STS; default_prompt_name is taken as null"),
    PublicModel(
        "Starbucks_STS", "ielabgroup/Starbucks_STS", None, "unknown", False, 12, 768, "mean", ("Pooling",),
        trained_cells=_STARBUCKS_DIAGONAL,
        sources=(("remote_code", "a sentence-transformers BERT (ielab/Starbucks sts/train_starbucks.py)"),
                 ("shape", "bert-base-uncased fine-tuned (ielab/Starbucks sts/train_starbucks.py)"),
                 ("pooling", "SentenceTransformer('bert-base-uncased') defaults to mean (train_starbucks.py)"),
                 ("modules", "the same default: Transformer, Pooling"),
                 ("prompts", "none in the training or inference scripts"),
                 ("trained", "StarbucksLoss layers 2..12 with dims 32..768, pairwise (train_starbucks.py)")),
        unverified=("revision", "license"),
        description="Starbucks SRL on STS: the diagonal (2,32) .. (12,768)"),
    PublicModel(
        "mdbr-leaf-ir", "MongoDB/mdbr-leaf-ir", "2e46f5aac796e621d51f678c306a66ede4712ecb", "apache-2.0", False,
        6, 768, "mean", ("Pooling", "Dense", "Normalize"), prompts=(("query", _SEARCH_PASSAGES),),
        trained_layers=(6,), trained_dims=(768,),
        sources=(("revision", MTEB.format("mdbr_models.py")), ("license", MTEB.format("mdbr_models.py")),
                 ("remote_code", "a MiniLM-L6 BERT (mteb adapted_from nreimers/MiniLM-L6-H384-uncased)"),
                 ("shape", "mteb: MiniLM-L6 (6 layers, hidden 384), embed_dim 768"),
                 ("prompts", "mteb mdbr_models.py model_prompts: query only")),
        unverified=("pooling", "modules", "trained"),
        description="a 6-layer MiniLM distilled for retrieval; a linear projection 384 -> 768",
        notes="pooling and modules: mean then a projection to 768 (from the issue and the 384 -> 768 widths); "
              "whether a Normalize follows was not seen. trained: the card claims MRL robustness without a dim list"),
)
PUBLIC_MODELS: dict[str, PublicModel] = {entry.name: entry for entry in ENTRIES}


def public_model(name: str) -> PublicModel | None:
    """The entry named `name`, else None. A hub id is not looked up: `--backbone nomic-ai/nomic-embed-text-v1.5`
    is served by its own configuration alone, at the hub's latest revision."""
    return PUBLIC_MODELS.get(name)


def trained_cells(name: str) -> tuple[tuple[int, int], ...]:
    entry = public_model(name)
    return entry.cells() if entry else ()


for _entry in ENTRIES:
    validate(_entry)
