"""Cells beyond the prefix grid, scored from the same cached encodings (no extra encode), with the same tasks,
precisions and per-example values as any cell (EvalSpec.random_subsets, asymmetric_dims, variant_precisions):

- `RandomSubset(draw)`: `dim` coordinates chosen at random instead of the first `dim`, a method-agnostic dim
  selection ("is the prefix special?", arXiv 2508.17744 draws 10). Draw s is one seeded random order of the
  served width's coordinates, the same for every method, layer and text set (so draws pair across methods); a cell
  keeps that order's first `dim` coordinates. At the full width a subset is every coordinate, which scores as the
  prefix does, so only dims below it are drawn.
- `QueryLayer(layer)`: queries encoded by the first `layer` blocks, documents at the cell's layer (rows keep the
  document layer in `layer`): an index built once at full size, searched with queries from a shallow sub-model.
  Only tasks with a query role have it (retrieval); the cell's relative_encode_cost is the query side's, as the
  documents are encoded once, offline.

The `variant` column names them ("subset:3", "query-layer:2"; "" is the prefix grid), and the per-example values
are stored under `example_key` with the variant appended. A head that serves only its own codes (bebr) has no
random subsets: its codes are made per prefix cell, and sign bits of a subset would not be what it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.spec import EvalSpec, SubModel
from bench.transforms import BinaryCodes, LayersWithHead

SUBSET_SEED = 24  # the draws' seed base: draw s uses default_rng([SUBSET_SEED, s]) (issue 24 asked for them)


def example_key(layer: int, dim: int, precision: str, name: str, variant: str = "") -> str:
    """Where a cell's per-example array `name` is stored in its run's examples file."""
    key = f"{layer}/{dim}/{precision}/{name}"
    return f"{key}/{variant}" if variant else key


def subset_coordinates(width: int, dim: int, draw: int) -> np.ndarray:
    """The `dim` coordinates of draw `draw`: the first `dim` of one seeded random order of `width`, sorted."""
    order = np.random.default_rng([SUBSET_SEED, draw]).permutation(width)
    return np.sort(order[:dim])


class _Selected(LayersWithHead):
    """A text set's layers with the columns `coordinates` picked (a subset) or another layer read (a query layer);
    a head's own codes follow the layer (a subset never reaches them: see the module docstring)."""

    def __init__(self, layers, coordinates: np.ndarray | None = None, layer: int | None = None):
        self.layers, self.coordinates, self.layer = layers, coordinates, layer

    def __getitem__(self, index: int) -> np.ndarray:
        vectors = self.layers[index if self.layer is None else self.layer - 1]
        return vectors if self.coordinates is None else np.asarray(vectors)[:, self.coordinates]

    def __len__(self) -> int:
        return len(self.layers)

    def codes(self, layer: int, dim: int) -> BinaryCodes | None:
        if not isinstance(self.layers, LayersWithHead):
            return None
        return self.layers.codes(layer if self.layer is None else self.layer, dim)


@dataclass(frozen=True)
class RandomSubset:
    draw: int

    @property
    def name(self) -> str:
        return f"subset:{self.draw}"

    def view(self, arrays: dict, roles: dict, cell: SubModel, width: int) -> dict:
        coordinates = subset_coordinates(width, cell.dim, self.draw)
        return {name: _Selected(layers, coordinates=coordinates) for name, layers in arrays.items()}

    def encode_layer(self, cell: SubModel) -> int:
        return cell.layer


@dataclass(frozen=True)
class QueryLayer:
    layer: int

    @property
    def name(self) -> str:
        return f"query-layer:{self.layer}"

    def view(self, arrays: dict, roles: dict, cell: SubModel, width: int) -> dict:
        return {name: _Selected(layers, layer=self.layer) if roles[name] == "query" else layers
                for name, layers in arrays.items()}

    def encode_layer(self, cell: SubModel) -> int:
        return self.layer


Variant = RandomSubset | QueryLayer


def variant_cells(cells: list[SubModel], spec: EvalSpec, width: int, roles: dict,
                  own_codes: bool) -> list[tuple[SubModel, Variant]]:
    """Every (cell, variant) the spec asks for on these cells: random subsets at each cell below the full `width`
    (none where the head serves only its own codes, `own_codes`), and each other query layer at the cells of
    `asymmetric_dims` (none for a task without a query role, or with nothing but queries)."""
    out = []
    if not own_codes:
        out += [(cell, RandomSubset(draw)) for cell in cells if cell.dim < width
                for draw in range(spec.random_subsets)]
    if "query" in roles.values() and any(role != "query" for role in roles.values()):
        layers = sorted({cell.layer for cell in cells})
        out += [(cell, QueryLayer(q)) for cell in cells if cell.dim in spec.asymmetric_dims
                for q in layers if q != cell.layer]
    return out
