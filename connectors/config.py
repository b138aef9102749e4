"""Reading connector configuration files; every error names the file and the field.

Example:
    >>> from pydantic import BaseModel
    >>> class C(BaseModel):
    ...     url: str
    >>> try:
    ...     validate_config(C, {}, source="c.yaml")
    ... except ConnectorConfigError as e:
    ...     print(e)
    c.yaml: url: Field required
"""

from __future__ import annotations

import glob
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConnectorConfigError(ValueError):
    """A connector configuration that cannot be used."""


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping in ``path``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConnectorConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConnectorConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConnectorConfigError(f"{path}: a connector config is a YAML mapping")
    return data


def validate_config(model: type[ModelT], data: dict[str, Any], *, source: str) -> ModelT:
    """Validate ``data`` as ``model``; errors read ``source: field: message``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        prefix = f"{source}: " if source else ""
        lines = [f"{prefix}{'.'.join(map(str, e['loc'])) or '(config)'}: {e['msg']}"
                 for e in exc.errors()]
        raise ConnectorConfigError("\n".join(lines)) from None


def resolve(base_dir: Path, path: Path | str) -> Path:
    """``path`` relative to the config file's folder unless absolute."""
    path = Path(path)
    return path if path.is_absolute() else base_dir / path


def expand(base_dir: Path, pattern: Path | str) -> list[Path]:
    """The files a config's ``path`` names: one file, or a glob in name order."""
    text = str(resolve(base_dir, pattern))
    return [Path(p) for p in sorted(glob.glob(text))] if glob.has_magic(text) else [Path(text)]


class PathOrUrl(BaseModel):
    """Config of a connector that reads documents from files (``path``) or one ``url``."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> PathOrUrl:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path or url")
        return self


def read_documents(paths: list[Path], url: str | None,
                   timeout: float = 30.0) -> Iterator[tuple[str, bytes | None, str | None]]:
    """``(locator, content, error)`` for every file, then the URL."""
    for path in paths:
        try:
            yield path.name, path.read_bytes(), None
        except OSError as exc:
            yield path.name, None, f"cannot read: {exc.strerror}"
    if url:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                yield url, response.read(), None
        except OSError as exc:
            yield url, None, f"cannot fetch: {exc}"
