"""Check FHIR resources against the VKP-R4 profiles' own constraints.

The constraints come from ``tests/data/vkp/vkp-r4-extract.json``, an extract
of the profiles in HL7Norway/Velferdsteknologi (the ``differential`` of each
StructureDefinition, the value sets they bind and the codes of those value
sets; the commit and paths are in the file, ``tests/data/vkp/extract.py``
regenerates it). fhir.resources checks the base R4 structure; this checks
what the VKP profiles add:

- ``min``/``max`` of every element the profile constrains, per instance of
  the parent element (``Encounter.participant.type`` in each participant);
- ``fixed[x]``/``pattern[x]`` values;
- ``required`` and ``extensible`` bindings: a coded value must have a coding
  from the bound value set, and every coding in a VKP code system must be a
  code of that system with its display;
- extensions: a VKP extension must be defined, be used in its context
  (``StructureDefinition.context``) and carry a value of an allowed type,
  and its own constraints (fixed values, bindings) hold;
- ``meta.profile`` names a profile in the extract for the resource's type.

A constraint the checker cannot interpret (a slice that is not a type slice
on ``value[x]``, a choice element) is reported as a problem, so that a newer
extract cannot be silently half-checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

EXTRACT = Path(__file__).parent / "data" / "vkp" / "vkp-r4-extract.json"
VKP_PREFIX = "http://ehelse.no/fhir/"


@cache
def extract() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXTRACT.read_text(encoding="utf-8"))
    return data


def code_system(url: str) -> dict[str, str]:
    """code -> display of a VKP code system in the extract."""
    concepts: dict[str, str] = extract()["codeSystems"][url]["concepts"]
    return concepts


def value_set(url: str) -> set[tuple[str, str]]:
    """The (system, code) pairs of a value set in the extract (``include`` of systems or codes)."""
    vs = extract()["valueSets"][url]
    out: set[tuple[str, str]] = set()
    for inc in vs["include"]:
        codes = inc["concept"] or list(code_system(inc["system"]))
        out.update((inc["system"], c) for c in codes)
    return out


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _children(values: list[Any], name: str) -> list[list[Any]]:
    """Per parent value, its ``name`` children (``value[x]``: any valueX)."""
    out = []
    for v in values:
        if not isinstance(v, dict):
            out.append([])
        elif name == "value[x]":
            out.append([v[k] for k in v if k.startswith("value")])
        else:
            out.append(_as_list(v.get(name)))
    return out


def _flatten(groups: list[list[Any]]) -> list[Any]:
    return [x for g in groups for x in g]


def _check_coded(where: str, value: Any, vs_url: str, strength: str) -> list[str]:
    if vs_url not in extract()["valueSets"]:
        return [f"{where}: bound value set {vs_url} is not in the extract"]
    allowed = value_set(vs_url)
    if isinstance(value, str):  # a code: the value set's system is implied
        ok = any(c == value for _, c in allowed)
        return [] if ok else [f"{where}: code {value!r} not in {vs_url} ({strength})"]
    if not isinstance(value, dict):
        return [f"{where}: not a coded value: {value!r}"]
    codings = value.get("coding", [value])
    problems = []
    for c in codings:
        sys_, code = c.get("system"), c.get("code")
        if sys_ in extract()["codeSystems"]:
            concepts = code_system(sys_)
            if code not in concepts:
                problems.append(f"{where}: {code!r} is not a code of {sys_}")
            elif "display" in c and c["display"] != concepts[code]:
                problems.append(
                    f"{where}: display {c['display']!r} of {sys_}#{code} is not {concepts[code]!r}"
                )
        elif sys_ is not None and sys_.startswith(VKP_PREFIX):
            problems.append(f"{where}: {sys_} is not a VKP code system in the extract")
    if not any((c.get("system"), c.get("code")) in allowed for c in codings):
        problems.append(f"{where}: no coding from {vs_url} ({strength}) in {value!r}")
    return problems


def _check_elements(sd: dict[str, Any], root: dict[str, Any], name: str) -> list[str]:
    """Check ``root`` (a resource, or an extension as type Extension) against ``sd``'s elements."""
    problems: list[str] = []
    for el in sd["elements"]:
        eid: str = el["id"]
        parts = eid.split(".")
        if len(parts) == 1:
            continue  # the root element: documentation only
        # a type slice on value[x] ("value[x]:valueCodeableConcept") applies to that type only
        steps: list[str] = []
        applies = True
        for p in parts[1:]:
            base, _, slice_name = p.partition(":")
            if slice_name:
                if base != "value[x]":
                    problems.append(f"{name}: cannot check the slice {eid}")
                    applies = False
                    break
                if slice_name not in root:
                    applies = False  # another type: the value[x] type list decides
                    break
            if base.endswith("[x]") and base != "value[x]":
                problems.append(f"{name}: cannot check the choice element {eid}")
                applies = False
                break
            steps.append(base)
        if not applies:
            continue
        values: list[Any] = [root]
        for s in steps[:-1]:
            values = _flatten(_children(values, s))
        groups = _children(values, steps[-1])
        at = f"{name} {'.'.join([parts[0], *steps])}"
        if "min" in el:
            for g in groups:
                if len(g) < el["min"]:
                    problems.append(f"{at}: {len(g)} values, the profile requires {el['min']}")
        if el.get("max") not in (None, "*"):
            for g in groups:
                if len(g) > int(el["max"]):
                    problems.append(f"{at}: {len(g)} values, the profile allows {el['max']}")
        found = _flatten(groups)
        for key, want in el.items():
            if key.startswith(("fixed", "pattern")):
                for v in found:
                    if v != want:
                        problems.append(f"{at}: {v!r}, the profile fixes {want!r}")
        if steps[-1] == "value[x]" and "type" in el:
            types = {t["code"] for t in el["type"]}
            for k in root:
                if k.startswith("value") and k[len("value") :] not in types:
                    problems.append(f"{at}: {k}, the profile allows value{'|value'.join(types)}")
        b = el.get("binding")
        if b and b.get("strength") in ("required", "extensible") and b.get("valueSet"):
            for v in found:
                problems.extend(_check_coded(at, v, b["valueSet"], b["strength"]))
    return problems


def _extensions(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(FHIRPath of the element that holds it, extension) for every extension under ``node``."""
    if isinstance(node, list):
        for x in node:
            yield from _extensions(x, path)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in ("extension", "modifierExtension"):
                for ext in _as_list(v):
                    yield path, ext
                    yield from _extensions(ext, f"{path}.extension")
            elif k != "resource":
                yield from _extensions(v, f"{path}.{k}")


def check(resource: dict[str, Any]) -> list[str]:
    """Problems of one resource against the VKP profiles it claims and the extensions it uses."""
    sds = extract()["structureDefinitions"]
    rtype = str(resource["resourceType"])
    name = f"{rtype}/{resource.get('id', '?')}"
    problems: list[str] = []
    claimed = _as_list((resource.get("meta") or {}).get("profile"))
    if not claimed:
        problems.append(f"{name}: claims no VKP profile")
    for url in claimed:
        sd = sds.get(url)
        if sd is None:
            problems.append(f"{name}: profile {url} is not in the extract")
        elif sd["kind"] != "resource" or sd["type"] != rtype:
            problems.append(f"{name}: profile {url} is for {sd['type']}, not {rtype}")
        else:
            problems.extend(_check_elements(sd, resource, name))
    for where, ext in _extensions(resource, rtype):
        url = str(ext.get("url"))
        sd = sds.get(url)
        if sd is None:
            if url.startswith(VKP_PREFIX):
                problems.append(f"{name}: extension {url} is not a VKP extension in the extract")
            continue
        contexts = [c["expression"] for c in sd.get("context", []) if c["type"] == "element"]
        if where not in contexts:
            problems.append(
                f"{name}: extension {url} is used on {where}; its context is {', '.join(contexts)}"
            )
        problems.extend(_check_elements(sd, ext, f"{name} extension {sd['url'].rsplit('/', 1)[1]}"))
    return problems
