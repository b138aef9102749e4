"""Load a YAML rule set; every error is reported as ``FILE:LINE:COL: message``.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.yaml"
    >>> _ = p.write_text("rules:\\n  - id: Bad Id\\n")
    >>> try:
    ...     load_ruleset(p)
    ... except RuleSetError as e:
    ...     print(e.errors[0].split(": ")[0].endswith("r.yaml:2:9"))
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from citywatch.rules.model import RuleSet


class RuleSetError(ValueError):
    """A rule file that is not valid; ``errors`` holds one ``FILE:LINE:COL: msg`` each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


def _node_at(node: yaml.Node, loc: tuple[Any, ...]) -> yaml.Node:
    """The deepest YAML node along a pydantic error location."""
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key or node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        # other parts (e.g. a discriminator tag) do not descend
    return node


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def parse_ruleset(text: str, path: Path) -> RuleSet:
    """Validate rule-set ``text`` read from ``path`` (used in messages and for zone paths)."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RuleSetError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict) or root is None:
        raise RuleSetError([f"{path}:1:1: a rule file is a mapping with a 'rules' list"])
    try:
        ruleset = RuleSet.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(file)"
            errors.append(f"{_where(path, _node_at(root, loc))}: {field}: {err['msg']}")
        raise RuleSetError(errors) from None
    base = path.parent
    zones = [z.model_copy(update={"path": (base / z.path)}) if not z.path.is_absolute() else z
             for z in ruleset.zones]
    sites = [s.model_copy(update={"path": (base / s.path)}) if not s.path.is_absolute() else s
             for s in ruleset.sites]
    return ruleset.model_copy(update={"zones": zones, "sites": sites})


def load_ruleset(path: Path) -> RuleSet:
    """Read and validate a rule file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleSetError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_ruleset(text, path)
