"""A griffe extension for the API reference: the signature of an `eqx.Module` whose
`__init__` equinox generates from its fields.

Static analysis (what mkdocstrings reads) sees no `__init__` in such a class, so its
reference entry would show no signature. This extension takes the parameters from the
runtime class (`inspect.signature`, exactly what a user calls) and the annotations from
the source (`ts: Float[Array, " time"]`, as written), and adds an `__init__` that
`merge_init_into_class` shows as the class's signature. Classes that define `__init__`
themselves are left as they are, and abstract classes get none.
"""

import importlib
import inspect

import equinox as eqx
import griffe


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _runtime(cls: griffe.Class):
    obj = importlib.import_module(cls.module.path)
    for part in cls.path[len(cls.module.path) + 1 :].split("."):
        obj = getattr(obj, part)
    return obj


def _annotation(cls: griffe.Class, name: str):
    """The field's annotation as written in the source, searched up the (static) MRO."""
    try:
        classes = [cls, *cls.mro()]
    except Exception:
        classes = [cls]
    for c in classes:
        member = c.members.get(name)
        annotation = None if member is None or member.is_alias else getattr(member, "annotation", None)
        if annotation is not None:
            return annotation
    return None


def _default(value) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    text = repr(value)
    return text if len(text) <= 80 else "..."


def _add_init(cls: griffe.Class) -> None:
    if "__init__" in cls.members:
        return
    try:
        runtime = _runtime(cls)
    except Exception:
        return
    # Abstract classes are not constructed: they get no signature.
    if not (isinstance(runtime, type) and issubclass(runtime, eqx.Module)) or inspect.isabstract(runtime):
        return
    if cls.name.startswith(("Abstract", "_")):
        return
    try:
        signature = inspect.signature(runtime)
    except (TypeError, ValueError):
        return
    parameters = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for p in signature.parameters.values():
        parameters.append(
            griffe.Parameter(
                p.name, annotation=_annotation(cls, p.name), kind=_KINDS[p.kind], default=_default(p.default)
            )
        )
    init = griffe.Function("__init__", lineno=0, endlineno=0, parent=cls, parameters=griffe.Parameters(*parameters))
    cls.set_member("__init__", init)


def _walk(obj, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, griffe.Class):
        _add_init(obj)
    for member in obj.members.values():
        if not member.is_alias and (member.is_module or member.is_class):
            _walk(member, seen)


class EquinoxInit(griffe.Extension):
    """Add the generated `__init__` of every `eqx.Module` dataclass (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        _walk(pkg, set())
