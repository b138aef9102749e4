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

import contextlib
import hashlib
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


MAX_BYTES = 1_000_000
"""Largest rule file (a city's rule set is a few hundred lines)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists."""
MAX_NODES = 200_000
"""Most values once aliases are expanded (an alias "bomb" expands to billions)."""


def document_problems(text: str, path: Path) -> list[str]:
    """Refuse what is too large, too deep or expands too far, before building anything
    (streamed through the YAML parser, which does not recurse), located where it
    happens. A YAML syntax error is reported here too."""
    if len(text) > MAX_BYTES:
        return [f"{path}:1:1: the rule file is larger than {MAX_BYTES} bytes"]
    depth, total = 0, 0
    starts: list[tuple[int, str | None]] = []
    sizes: dict[str, int] = {}
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return [f"{_mark(path, event.start_mark)}: nested deeper than "
                            f"{MAX_DEPTH} levels"]
                starts.append((total, event.anchor))
                total += 1
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                depth -= 1
                began, anchor = starts.pop()
                if anchor:
                    sizes[anchor] = total - began
            elif isinstance(event, yaml.ScalarEvent):
                total += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                if any(a == event.anchor for _, a in starts):
                    return [f"{_mark(path, event.start_mark)}: invalid YAML: alias "
                            f"*{event.anchor} is inside the node it names (a loop)"]
                if event.anchor not in sizes:
                    return [f"{_mark(path, event.start_mark)}: invalid YAML: alias "
                            f"*{event.anchor} names no anchor &{event.anchor} before it"]
                total += sizes.get(event.anchor, 1)
            if total > MAX_NODES:
                return [f"{_mark(path, event.start_mark)}: more than {MAX_NODES} values "
                        "once aliases are expanded"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = _mark(path, mark) if mark else f"{path}:1:1"
        return [f"{place}: invalid YAML: {getattr(exc, 'problem', None) or exc}"]
    return []


def _mark(path: Path, mark: Any) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def node_at(node: yaml.Node, loc: tuple[Any, ...]) -> yaml.Node:
    """The deepest YAML node along a pydantic error location."""
    for number, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                if number < len(loc) - 1:
                    continue  # a union member's tag (e.g. 'threshold'): not in the file
                return node
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        # other parts (e.g. a discriminator tag) do not descend
    return node


def where(path: Path, node: yaml.Node) -> str:
    """``FILE:LINE:COL`` of ``node``."""
    return _mark(path, node.start_mark)


def _use_site(root: yaml.Node, loc: tuple[Any, ...], message: str) -> yaml.Node:
    """The node in rule ``loc`` where the unknown layer named in ``message`` is used."""
    rule = node_at(root, loc)
    name = message.split("layer '")[-1].split("'")[0] if "layer '" in message else None
    stack = [rule]
    while stack and name is not None:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(value, yaml.ScalarNode) and value.value in (
                        name, f"zone:{name}") and key.value in (
                        "layer", "sites", "zone_layer", "group_by"):
                    return value
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed(node.value))
    return rule


def parse_ruleset(text: str, path: Path) -> RuleSet:
    """Validate rule-set ``text`` read from ``path`` (used in messages and for zone paths)."""
    problems = document_problems(text, path)
    if problems:
        raise RuleSetError(problems)
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # what the streamed check cannot see
        mark = getattr(exc, "problem_mark", None)
        raise RuleSetError([f"{_mark(path, mark) if mark else f'{path}:1:1'}: invalid "
                            f"YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    if not isinstance(data, dict) or root is None:
        raise RuleSetError([f"{path}:1:1: a rule file is a mapping with a 'rules' list"])
    try:
        ruleset = RuleSet.model_validate(data, context={"references": "located"})
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(file)"
            errors.append(f"{where(path, node_at(root, loc))}: {field}: {err['msg']}")
        raise RuleSetError(errors) from None
    located = [f"{where(path, _use_site(root, loc, message))}: {message}"
               for loc, message in ruleset.reference_problems()]
    if located:
        raise RuleSetError(located)
    base = path.parent
    zones = [z.model_copy(update={"path": (base / z.path)}) if not z.path.is_absolute() else z
             for z in ruleset.zones]
    sites = [s.model_copy(update={"path": (base / s.path)}) if not s.path.is_absolute() else s
             for s in ruleset.sites]
    resolved = ruleset.model_copy(update={"zones": zones, "sites": sites})
    return resolved.with_layer_digests(layer_digests(resolved))


def layer_digests(ruleset: RuleSet) -> dict[str, str]:
    """SHA-256 of every layer file that can be read (``zones:<layer>``/``sites:<layer>``)."""
    digests = {}
    for kind, specs in (("zones", ruleset.zones), ("sites", ruleset.sites)):
        for spec in specs:
            with contextlib.suppress(OSError):  # unreadable: validation reports it
                digests[f"{kind}:{spec.layer}"] = hashlib.sha256(spec.path.read_bytes()
                                                                 ).hexdigest()
    return digests


def load_ruleset(path: Path) -> RuleSet:
    """Read and validate a rule file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleSetError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_ruleset(text, path)
