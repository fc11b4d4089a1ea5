"""`--set METHOD.FIELD=VALUE`: a method's hyperparameters from the command line, typed by its Params dataclass.

A value is read as the field's annotation says: int, float, bool (true/false, yes/no, 1/0), str, `none` where the
field is optional, and tuples as Python literals (`targets=((1,16),(2,32))`, `dims=16,32,64`) checked element by
element. A comma list is a sweep: `--set starbucks-srl.kl_weight=0.1,0.3,1` gives three values, and several
`--set` of one method multiply out. For a tuple field the whole text is one value when it reads as one, else each
of its items is a sweep value (`dims=(16,32),(32,64)`: two). The method's own `__post_init__` checks the values
together when the specs are made (bench/runner.make_specs); the run records them in its params column, and they
change its run_id like any other hyperparameter.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import itertools
import types
import typing

from bench import BenchError

_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def parse_sets(texts: list[str], methods: list[str]) -> dict[str, list[dict]]:
    """`--set` texts -> {method: [{field: value}, ...]}, one dict per point of that method's sweep grid. `methods`:
    the methods being run (a --set for any other is an error, not silently ignored)."""
    from methods import METHODS

    values: dict[str, dict[str, list]] = {}
    for text in texts:
        target, sep, raw = text.partition("=")
        method, dot, name = target.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise BenchError(f"--set expects METHOD.FIELD=VALUE, e.g. starbucks-srl.kl_weight=0.3; got {text!r}")
        params = METHODS.get(method).Params  # unknown method: the registry's "did you mean"
        hint = _field_types(method, params, name)
        if name in values.get(method, {}):
            raise BenchError(f"--set {method}.{name} is given twice; give its values once, as a comma list")
        values.setdefault(method, {})[name] = [_convert(v, hint, f"{method}.{name}") for v in _sweep(raw, hint)]
    for method in values:
        if method not in methods:
            raise BenchError(f"--set names {method}, which this run does not include (methods: {', '.join(methods)});"
                             " add it to --methods or drop the --set")
    return {method: [dict(zip(fields, point)) for point in itertools.product(*fields.values())]
            for method, fields in values.items()}


def _field_types(method: str, params: type, name: str):
    """The annotation of field `name` of a method's Params; an unknown field is one line with the close names."""
    fields = [f.name for f in dataclasses.fields(params)]
    if not fields:
        raise BenchError(f"{method} has no hyperparameters to set")
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise BenchError(f"{method} has no hyperparameter {name!r}: {hint}its fields: {', '.join(fields)}")
    return typing.get_type_hints(params)[name]


def _is_tuple(hint) -> bool:
    return typing.get_origin(hint) is tuple or any(typing.get_origin(a) is tuple for a in _members(hint))


def _members(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _sweep(raw: str, hint) -> list[str]:
    """The texts of a value's sweep points (see the module docstring)."""
    raw = raw.strip()
    if not _is_tuple(hint):
        return [part.strip() for part in raw.split(",")]
    try:
        _convert(raw, hint, "")
        return [raw]
    except BenchError:
        pass
    try:
        items = [repr(item) for item in ast.literal_eval(raw)]
        for item in items:
            _convert(item, hint, "")
    except (ValueError, TypeError, SyntaxError, BenchError):
        return [raw]  # neither one value nor a list of them: _convert reports the whole text
    return items


def _convert(text: str, hint, where: str):
    """One value's text -> the field's type; a bad value is one line naming the field and the expected type."""
    text = text.strip()
    members = _members(hint)
    if type(None) in members and text.lower() == "none":
        return None
    (inner,) = [m for m in members if m is not type(None)]  # Params fields are one type, or that type | None
    try:
        if inner is str:
            return text
        if inner is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise ValueError
            return text.lower() in _TRUE
        if inner in (int, float):
            return inner(text)
        return _check(ast.literal_eval(text), inner)
    except (ValueError, TypeError, SyntaxError):
        optional = " or none" if type(None) in members else ""
        raise BenchError(f"--set {where}={text}: expected {_describe(inner)}{optional}, got {text!r}") from None


def _check(value, hint):
    """A literal checked against a (nested) type: tuple[X, ...], tuple[X, Y], int, float (an int is fine), str;
    lists become tuples. Raises ValueError when it does not fit."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ValueError
        kinds = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(value):
            raise ValueError
        return tuple(_check(v, k) for v, k in zip(value, kinds))
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    if hint is float and isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, hint):
        raise ValueError
    return value


def _describe(hint) -> str:
    if hint is bool:
        return "true or false"
    if hint in (int, float, str):
        return f"an {hint.__name__}" if hint is int else f"a {hint.__name__}"
    return f"a Python literal of type {hint}".replace("typing.", "")
