"""The API reference documents every public name.

The reference pages (`docs/api/*.md`) document an object with a mkdocstrings entry,
`::: sgjax.Simulator`. A name exported in two namespaces (`sgjax.MismatchScore` is
`sgjax.diagnostics.MismatchScore`) is documented once, and the other page carries a
Markdown anchor for it, `[](){#sgjax.MismatchScore}`, so that cross-references to
either name resolve. The site itself is built, warnings as errors, by
`mkdocs build --strict` in `.ci/run`, not here.
"""

import importlib
import pathlib
import re
import types

import pytest


API = pathlib.Path(__file__).resolve().parent.parent / "docs" / "api"

NAMESPACES = (
    "sgjax",
    "sgjax.models",
    "sgjax.observation",
    "sgjax.heads",
    "sgjax.nn",
    "sgjax.baselines",
    "sgjax.diagnostics",
)

_ENTRY = re.compile(r"^:::\s+([\w.]+)\s*$", re.M)
_ANCHOR = re.compile(r"\[\]\(\)\{#([\w.]+)\}")


def public_names(module: types.ModuleType) -> list[str]:
    """`__all__` if the module defines it, else its names not starting with `_`
    that are not modules."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_") and not isinstance(vars(module)[n], types.ModuleType)]
    return sorted(names)


def resolve(path: str):
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def reference() -> tuple[dict[str, str], dict[str, str]]:
    """The `:::` entries and the Markdown anchors of the reference pages, each
    identifier → the page that holds it."""
    entries, anchors = {}, {}
    for page in sorted(API.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for found, where in ((_ENTRY.findall(text), entries), (_ANCHOR.findall(text), anchors)):
            for identifier in found:
                where.setdefault(identifier, page.name)
    return entries, anchors


def test_reference_pages_exist():
    entries, _ = reference()
    assert entries, f"no `::: name` entries found under {API}"


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_public_name_is_documented(namespace):
    module = importlib.import_module(namespace)
    entries, anchors = reference()
    documented = {id(resolve(e)) for e in entries}
    missing = []
    for name in public_names(module):
        path = f"{namespace}.{name}"
        if path in entries:
            continue
        # Documented under another name, with an anchor for this one.
        if path in anchors and id(getattr(module, name)) in documented:
            continue
        missing.append(path)
    assert not missing, (
        f"{len(missing)} public name(s) of {namespace} have no entry in the API reference "
        f"(docs/api/*.md): {', '.join(missing)}. Add a `::: NAME` line for each to the page "
        "of its namespace (or, for a name exported twice, an anchor `[](){#NAME}` beside "
        "a link to the entry that documents it)."
    )


def test_every_entry_names_a_public_object():
    entries, anchors = reference()
    broken = []
    for identifier, page in {**entries, **anchors}.items():
        try:
            resolve(identifier)
        except (ImportError, AttributeError):
            broken.append(f"{identifier} ({page})")
    assert not broken, f"The API reference names objects that do not exist: {', '.join(broken)}."
    private = [f"{e} ({p})" for e, p in entries.items() if any(part.startswith("_") for part in e.split("."))]
    assert not private, f"The API reference documents private paths; use the public name: {', '.join(private)}."
