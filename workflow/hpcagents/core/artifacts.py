"""Reading and writing the campaign's JSON artifacts.

Every artifact is validated against its JSON Schema in ``workflow/schemas/`` before it
is written, and written atomically (temp file in the same directory, fsync, rename), so
a half-written file can never be mistaken for a result after a kill.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

#: ``workflow/`` — schemas and prompts live beside the package, not inside it.
WORKFLOW_DIR = Path(__file__).resolve().parents[2]
SCHEMA_DIR = WORKFLOW_DIR / "schemas"
PROMPT_DIR = WORKFLOW_DIR / "prompts"
REPO_DIR = WORKFLOW_DIR.parent


class ArtifactError(ValueError):
    """An artifact (or config) does not match its schema; the message names the key."""


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load ``workflow/schemas/<name>.schema.json``."""
    path = SCHEMA_DIR / f"{name}.schema.json"
    with path.open() as fh:
        return json.load(fh)


@lru_cache(maxsize=1)
def _registry() -> Registry:
    """All schemas by file name, so ``{"$ref": "llm_call.schema.json"}`` resolves."""
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        contents = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(contents, DRAFT202012)))
    return Registry().with_resources(resources)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate(data: Any, schema_name: str, what: str | None = None) -> None:
    """Validate ``data`` against a named schema; raise :class:`ArtifactError` naming the key.

    The best-matching error is reported (``jsonschema.exceptions.best_match``) so a user
    sees ``llm.servers.0.base_url: 'x' is not a 'uri'`` rather than a wall of text.
    """
    schema = load_schema(schema_name)
    validator = jsonschema.Draft202012Validator(
        schema, registry=_registry(), format_checker=jsonschema.FormatChecker()
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        label = what or schema_name
        raise ArtifactError(f"{label}: key '{_key_path(error)}': {error.message}")


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write text so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path | str, data: Any, schema_name: str | None = None) -> None:
    """Validate (when a schema is named) then atomically write ``data`` as JSON."""
    if schema_name is not None:
        validate(data, schema_name, what=str(path))
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json_or_none(path: Path | str) -> dict[str, Any] | None:
    """A JSON object, or None when it is missing, unreadable or not an object: for views
    of a campaign still running (status, reports), which go on with what is there."""
    try:
        with Path(path).open() as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_json(path: Path | str, schema_name: str | None = None) -> Any:
    """Read a JSON artifact, validating it when a schema is named."""
    with Path(path).open() as fh:
        data = json.load(fh)
    if schema_name is not None:
        validate(data, schema_name, what=str(path))
    return data
