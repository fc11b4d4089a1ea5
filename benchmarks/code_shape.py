"""Prints the shape of the code (issue 21's "Must show"): every file in bench/ and methods/ over 400 lines (goal:
none), the 5 longest functions, and the capability probes: every `hasattr(...)` and 3-argument `getattr(...)` call,
read with ast, either a LIBRARY probe on the allow-list below (a library's object whose attributes differ between
versions or architectures, each with its reason) or a probe of a project object (goal: 0; a declared contract
replaces it), printed one per line.

    python benchmarks/code_shape.py [--root .]

Exits 1 when a file is over the limit or a project probe is left, so it can guard a CI step.
"""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("bench", "methods")
MAX_LINES = 400

# (file, receiver as ast.unparse writes it) -> why probing that library object is right. A probe that moves to
# another file needs its row moved too (the tool then reports it as a project probe).
LIBRARY_PROBES = {
    ("bench/devices.py", "torch.cpu"): "torch.cpu's private feature checks (_is_avx512_bf16_supported...) "
                                        "come and go between torch versions",
    ("bench/encoder.py", "self.pooler"): "sentence-transformers' Pooling: include_prompt is missing in older "
                                          "versions",
    ("bench/encoder.py", "m"): "sentence-transformers' modules after Pooling: only some report their output "
                                "dimension",
    ("bench/pooling.py", "module"): "Hugging Face architectures name their block list differently (encoder.layer, "
                                     "layers, h...)",
    ("bench/smae.py", "encoder"): "Hugging Face architectures: SMAE needs BERT's embeddings and encoder.layer",
    ("bench/smae.py", "getattr(encoder, 'encoder', None)"): "the same BERT layout, one level down",
    ("bench/smae.py", "mlm"): "Hugging Face: BERT-style masked-LM heads sit at cls.predictions, others elsewhere "
                                "(the head is then made fresh)",
    ("bench/smae.py", "getattr(mlm, 'cls', None)"): "the same head, one level down",
    ("bench/data/beir.py", "exc"): "the standard library: json's JSONDecodeError has .msg, a RecursionError not",
    ("bench/fingerprint.py", "value"): "Python introspection: a module global may be any object, with or without "
                                       "__module__",
    ("bench/tasks/mteb.py", "module"): "a user's task file: the class it names may be missing (one error line)",
    ("bench/train.py", "obj"): "torch: a batch value that is a tensor (or a tokenizer's BatchEncoding) moves to the "
                               "device, anything else stays",
}


@dataclass(frozen=True)
class Probe:
    file: str
    line: int
    receiver: str
    call: str

    @property
    def reason(self) -> str | None:
        return LIBRARY_PROBES.get((self.file, self.receiver))


def python_files(root: Path) -> list[Path]:
    return sorted(p for package in PACKAGES for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)


def long_files(root: Path) -> list[tuple[str, int]]:
    sizes = [(str(p.relative_to(root)), len(p.read_text().splitlines())) for p in python_files(root)]
    return sorted(((f, n) for f, n in sizes if n > MAX_LINES), key=lambda x: -x[1])


def functions(root: Path) -> list[tuple[int, str, int, str]]:
    """(lines, file, line, name) of every function and method, decorators left out."""
    out = []
    for path in python_files(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, str(path.relative_to(root)), node.lineno, node.name))
    return sorted(out, key=lambda x: (-x[0], x[1], x[2]))


def probes(root: Path) -> list[Probe]:
    """Every hasattr(x, name) and getattr(x, name, default) call."""
    out = []
    for path in python_files(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args and (
                    node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3)):
                out.append(Probe(str(path.relative_to(root)), node.lineno, ast.unparse(node.args[0]),
                                 ast.unparse(node)))
    return sorted(out, key=lambda p: (p.file, p.line, p.call))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    root = parser.parse_args(argv).root
    files = python_files(root)
    print(f"{len(files)} files, {sum(len(p.read_text().splitlines()) for p in files)} lines in "
          f"{' and '.join(f'{p}/' for p in PACKAGES)}")
    over = long_files(root)
    print(f"files over {MAX_LINES} lines: {len(over)}")
    for file, n in over:
        print(f"  {file}: {n}")
    print("longest functions:")
    for n, file, line, name in functions(root)[:5]:
        print(f"  {file}:{line} {name}: {n} lines")
    found = probes(root)
    library = [p for p in found if p.reason]
    project = [p for p in found if not p.reason]
    print(f"library probes (allow-listed): {len(library)}")
    for p in library:
        print(f"  {p.file}:{p.line} {p.call}  -- {p.reason}")
    print(f"capability probes on project objects: {len(project)}")
    for p in project:
        print(f"  {p.file}:{p.line} {p.call}")
    return 1 if over or project else 0


if __name__ == "__main__":
    raise SystemExit(main())
