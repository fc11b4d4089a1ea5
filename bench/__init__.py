"""elastic-bench: a benchmark harness for elastic (layer x dim x precision) text embeddings."""

__version__ = "0.1.0"


class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""
