"""The entry points: file, text or dict in, a checked :class:`Config` out, or a
:class:`ConfigError` listing every problem with its file, line and path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from pydantic import ValidationError

from .checks import check_config
from .errors import ConfigError, ConfigIssue, Path, format_path
from .messages import Finding
from .model import Config
from .translate import translate
from .yaml_source import read_yaml

LineOf = Callable[[Path], int | None]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"cannot read config file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"config file is not UTF-8 text: {exc.reason}")]) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate YAML text; ``source`` names it in errors."""
    doc = read_yaml(text, source)
    return _validate(doc.data, source, doc.line_of)


def coerce_config(obj: Config | dict[str, object] | str | os.PathLike[str]) -> Config:
    """Whatever a caller holds, as a checked Config: a Config is re-checked (it may have been
    built or copied without the cross-section checks), a dict is validated, a str or path is
    read as a file."""
    if isinstance(obj, Config):
        findings = check_config(obj)
        if findings:
            raise _error(findings, obj.source or "<config>", _no_lines)
        return obj
    if isinstance(obj, dict):
        return _validate(obj, "<dict>", _no_lines)
    if isinstance(obj, (str, os.PathLike)):
        return load_config(obj)
    raise TypeError(f"expected a Config, a dict or a file path, got {type(obj).__name__}")


def _validate(data: object, source: str, line_of: LineOf) -> Config:
    if data is None:
        raise ConfigError(
            [ConfigIssue(source, None, "", "the config is empty; expected a mapping with at least 'listeners'")]
        )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise _error(translate(exc.errors(include_url=False)), source, line_of) from None
    findings = check_config(cfg)
    if findings:
        raise _error(findings, source, line_of)
    cfg._source = source
    return cfg


def _error(findings: Iterable[Finding], source: str, line_of: LineOf) -> ConfigError:
    return ConfigError(ConfigIssue(source, line_of(f.line_path), format_path(f.path), f.message) for f in findings)


def _no_lines(path: Path) -> int | None:
    return None
