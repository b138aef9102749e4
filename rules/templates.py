"""Alert message templates: plain ``{name}`` placeholders with at most a bounded format
spec, checked before a rule set is accepted (a spec like ``{volume:>900000000}`` would
make every alert nearly a gigabyte).

Example:
    >>> template_problems("PM2.5 {pm25:.1f} in {zone}", {"pm25", "zone"})
    []
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection
from string import Formatter

MAX_WIDTH = 200
MAX_PRECISION = 20
_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?"
                   r"[bcdeEfFgGnosxX%]?")


def suggest(name: str, choices: Collection[str], form: str = "{{{}}}") -> str:
    """`` (did you mean {a} or {b}?)`` for the closest ``choices`` (each shown through
    ``form``), or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=2, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(form.format(c) for c in close)}?)"


def template_problems(template: str, provided: Collection[str] | None) -> list[str]:
    """What is wrong with an alert message template; ``provided`` None accepts any
    plain name.

    Example:
        >>> template_problems("{volume:>900000000}", {"volume"})
        ['format spec of {volume} is too wide (at most 200 characters)']
    """
    try:
        parts = list(Formatter().parse(template))
    except ValueError as exc:
        return [f"the message is not a valid template: {exc} (write {{{{ for a brace)"]
    problems = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name.isidentifier():
            problems.append(f"placeholder {{{name}}} must be a plain name (no '.', '[' or "
                            "position)")
            continue
        if conversion:
            problems.append(f"placeholder {{{name}!{conversion}}}: conversions are not "
                            "allowed")
        if spec:
            match = _SPEC.fullmatch(spec)
            if match is None or "{" in spec:
                problems.append(f"format spec of {{{name}}} is not a plain width/precision "
                                f"spec: {spec!r}")
            elif int(match["width"] or 0) > MAX_WIDTH:
                problems.append(f"format spec of {{{name}}} is too wide (at most "
                                f"{MAX_WIDTH} characters)")
            elif int(match["precision"] or 0) > MAX_PRECISION:
                problems.append(f"format spec of {{{name}}} asks for more than "
                                f"{MAX_PRECISION} digits")
        if provided is not None and name not in provided:
            problems.append(f"unknown placeholder {{{name}}} in the message"
                            f"{suggest(name, provided)}")
    return problems

