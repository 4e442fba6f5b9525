"""Regenerate ``vkp-r4-extract.json`` from HL7Norway/Velferdsteknologi.

    python tests/data/vkp/extract.py GIT_DIR > tests/data/vkp/vkp-r4-extract.json

GIT_DIR is a clone or mirror of that repository. The script reads, at its
HEAD, the profiles and the extension trygg's VKP export is checked against
(their ``differential`` elements: cardinality, fixed/pattern values,
bindings, types; an extension's context), the value sets those profiles bind
and the code systems the value sets include (codes and displays only), and
records the repository, commit and path of each. Nothing else of the
repository is copied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

REPOSITORY = "HL7Norway/Velferdsteknologi"
NS = {"f": "http://hl7.org/fhir"}
STRUCTURE_DEFINITIONS = [
    "VKP-R4/StructureDefinition/vkp-DetectedIssue-v090.structuredefinition-profile.xml",
    "VKP-R4/StructureDefinition/vkp-Encounter-v090.StructureDefinition-profile.xml",
    "VKP-R4/StructureDefinition/vkp-Composition-v090.structuredefinition-profile.xml",
    "VKP-R4/StructureDefinition/vkp-severitylevel-v090.structuredefinition-extension.xml",
]


def _git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], check=True, capture_output=True, text=True
    ).stdout


def _val(el: ET.Element | None, tag: str) -> str | None:
    if el is None:
        return None
    c = el.find(f"f:{tag}", NS)
    return None if c is None else c.get("value")


def _element(e: ET.Element) -> dict[str, Any]:
    out: dict[str, Any] = {"id": e.get("id"), "path": _val(e, "path")}
    for k in ("sliceName", "min", "max", "mustSupport"):
        v = _val(e, k)
        if v is not None:
            out[k] = int(v) if k == "min" else (v == "true" if k == "mustSupport" else v)
    for c in e:
        tag = c.tag.split("}")[1]
        if tag.startswith(("fixed", "pattern")) and c.get("value") is not None:
            out[tag] = c.get("value")
    types = [
        {
            "code": _val(t, "code"),
            "targetProfile": [p.get("value") for p in t.findall("f:targetProfile", NS)],
        }
        for t in e.findall("f:type", NS)
    ]
    if types:
        out["type"] = [t if t["targetProfile"] else {"code": t["code"]} for t in types]
    b = e.find("f:binding", NS)
    if b is not None:
        out["binding"] = {"strength": _val(b, "strength"), "valueSet": _val(b, "valueSet")}
    return out


def _structure_definition(root: ET.Element, path: str) -> dict[str, Any]:
    sd: dict[str, Any] = {
        "path": path,
        "url": _val(root, "url"),
        "kind": _val(root, "kind"),
        "type": _val(root, "type"),
        "baseDefinition": _val(root, "baseDefinition"),
    }
    ctx = [
        {"type": _val(c, "type"), "expression": _val(c, "expression")}
        for c in root.findall("f:context", NS)
    ]
    if ctx:
        sd["context"] = ctx
    diff = root.find("f:differential", NS)
    sd["elements"] = [
        _element(e) for e in (diff.findall("f:element", NS) if diff is not None else [])
    ]
    return sd


def main(repo: str) -> None:
    commit = _git(repo, "rev-parse", "HEAD").strip()
    files = _git(repo, "ls-tree", "-r", "HEAD", "--name-only").splitlines()

    def load(path: str) -> ET.Element:
        return ET.fromstring(_git(repo, "show", f"HEAD:{path}").encode())

    by_url: dict[str, tuple[str, ET.Element]] = {}
    for p in files:
        if (
            p.startswith("VKP-R4/")
            and p.endswith(".xml")
            and ("/ValueSet/" in p or "/CodeSystem/" in p)
        ):
            root = load(p)
            url = _val(root, "url")
            if url:
                by_url[url] = (p, root)
    sds = [_structure_definition(load(p), p) for p in STRUCTURE_DEFINITIONS]
    value_sets: dict[str, Any] = {}
    code_systems: dict[str, Any] = {}
    for sd in sds:
        for e in sd["elements"]:
            vs_url = (e.get("binding") or {}).get("valueSet")
            if not vs_url or vs_url not in by_url:
                continue
            vs_path, vs = by_url[vs_url]
            includes = [
                {
                    "system": _val(i, "system"),
                    "concept": [_val(c, "code") for c in i.findall("f:concept", NS)],
                }
                for i in vs.findall("f:compose/f:include", NS)
            ]
            value_sets[vs_url] = {"path": vs_path, "include": includes}
            for inc in includes:
                cs_path, cs = by_url[inc["system"]]
                code_systems[inc["system"]] = {
                    "path": cs_path,
                    "concepts": {
                        _val(c, "code"): _val(c, "display")
                        for c in cs.iter(f"{{{NS['f']}}}concept")
                    },
                }
    json.dump(
        {
            "source": {
                "repository": REPOSITORY,
                "commit": commit,
                "note": "Extract (differential constraints, value-set code lists) of the VKP-R4 "
                "profiles; regenerate with tests/data/vkp/extract.py.",
            },
            "structureDefinitions": {sd["url"]: sd for sd in sds},
            "valueSets": value_sets,
            "codeSystems": code_systems,
        },
        sys.stdout,
        ensure_ascii=False,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
