"""Write the JSON Schema files in ``schemas/json/`` from the wire structs and the profile model.

The Python types are the source of truth; the JSON files exist for outside tools
(editors completing a profile, a partner checking a payload) and are committed so
they can be read without running Python. A test compares them with a fresh render,
so a change to a type that is not regenerated fails CI.

Descriptions come from docstrings, and libraries disagree on how to tidy them (msgspec
0.23 began removing docstring indentation, 0.22 kept it). Every description is therefore
reflowed here, one line per paragraph, so the files depend on the words alone and not
on the installed version's idea of whitespace.

    python -m schemas.generate           # rewrite the files
    python -m schemas.generate --check   # exit 1 and list the files that are stale
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import msgspec
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schemas import SCHEMA_VERSION
from schemas.addressing import families
from schemas.profile import DeviceProfile, Point
from schemas.wire import WIRE_TYPES

JSON_DIR = Path(__file__).resolve().parent / "json"
"""Where the generated files live, next to the types they describe."""

SUFFIX = ".schema.json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def reflow(text: str) -> str:
    """Text with each paragraph on one line and single spaces, paragraphs a blank line apart."""
    paragraphs = (" ".join(part.split()) for part in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(part for part in paragraphs if part)


def _reflow_descriptions(node: Any) -> Any:
    """A copy of a schema whose every ``description`` string is reflowed."""
    if isinstance(node, dict):
        return {
            key: reflow(value)
            if key == "description" and isinstance(value, str)
            else _reflow_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_reflow_descriptions(item) for item in node]
    return node


def _document(stem: str, title: str, schema: dict[str, Any]) -> str:
    """A schema as committed: descriptions reflowed, dialect, id and title added, keys sorted."""
    document = {
        **_reflow_descriptions(schema),
        "$schema": _DIALECT,
        "$id": f"urn:anju:schemas:{stem}",
        "title": title,
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_schemas() -> dict[str, str]:
    """Every schema file's name mapped to its exact text; the same input gives the same bytes."""
    files = {
        f"{stem}{SUFFIX}": _document(
            stem,
            f"Anju {wire_type.__name__} payload (schema_version {SCHEMA_VERSION})",
            msgspec.json.schema(wire_type),
        )
        for stem, wire_type in WIRE_TYPES.items()
    }
    files[f"device_profile{SUFFIX}"] = _document(
        "device_profile", "Anju device profile", profile_schema()
    )
    return files


def profile_schema() -> dict[str, Any]:
    """The profile model's schema with every registered addressing family written in.

    Points and profiles take their family's keys in validators, not as fields (any
    module may register a family), so pydantic's schema lacks them. Here each
    family's point model becomes an optional property of a point, exactly one of
    which it must have; its settings model an optional property of the profile; and
    the profile's protocol picks the family its points and settings must use.
    """
    addressing = families()
    sections = {family.key: family.settings for family in addressing if family.settings}
    models: list[type[BaseModel]] = [
        DeviceProfile,
        Point,
        *(family.point for family in addressing),
        *sections.values(),
    ]
    refs, combined = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/$defs/{model}"
    )
    ref = {model: refs[(model, "validation")] for model in models}
    defs: dict[str, Any] = combined["$defs"]
    profile: dict[str, Any] = defs.pop(ref[DeviceProfile]["$ref"].removeprefix("#/$defs/"))
    point: dict[str, Any] = defs[ref[Point]["$ref"].removeprefix("#/$defs/")]
    point["properties"].update({family.key: ref[family.point] for family in addressing})
    point["oneOf"] = [{"required": [family.key]} for family in addressing]
    profile["properties"].update({key: ref[model] for key, model in sections.items()})
    profile["properties"]["protocol"]["enum"] = sorted(
        protocol for family in addressing for protocol in family.protocols
    )
    profile["allOf"] = [
        {
            "if": {
                "properties": {"protocol": {"enum": sorted(family.protocols)}},
                "required": ["protocol"],
            },
            "then": {
                "properties": {
                    "points": {"items": {"required": [family.key]}},
                    **{key: False for key in sections if key != family.key},
                },
                **({"required": [family.key]} if family.settings_required else {}),
            },
        }
        for family in addressing
    ]
    return {**profile, "$defs": defs}


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of files in ``directory`` that are missing, differ from a render, or are left over."""
    return _stale(directory, render_schemas())


def write_schemas(directory: Path = JSON_DIR) -> list[str]:
    """Bring ``directory`` up to date: write changed files, delete left-over ones.

    Returns the names of the files it wrote or deleted.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    changed = _stale(directory, rendered)
    for name in changed:
        if name in rendered:
            (directory / name).write_text(rendered[name], encoding="utf-8")
        else:
            (directory / name).unlink()
    return changed


def _stale(directory: Path, rendered: dict[str, str]) -> list[str]:
    def differs(name: str, text: str) -> bool:
        path = directory / name
        return not path.is_file() or path.read_text(encoding="utf-8") != text

    stale = [name for name, text in rendered.items() if differs(name, text)]
    leftover = [p.name for p in directory.glob(f"*{SUFFIX}") if p.name not in rendered]
    return sorted(stale + leftover)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m schemas.generate",
        description=f"Generate the JSON Schema files in {JSON_DIR} from schemas.wire "
        "and schemas.profile.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the files that differ from a fresh render",
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: {JSON_DIR / name}", file=sys.stderr)
        if stale:
            print("run `python -m schemas.generate` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(render_schemas())} schema files up to date")
        return 0
    for name in write_schemas():
        print(f"updated {JSON_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
