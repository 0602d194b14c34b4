"""The entry points: file, text or dict in, a checked :class:`Config` out, or a
:class:`ConfigError` listing every problem with its file, line and path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from pydantic import ValidationError

from .checks import check_endpoint_files, check_engine, check_references
from .errors import ConfigError, ConfigIssue, Path, format_path
from .gc_pause import cycle_collection_paused
from .messages import Finding
from .model import Config
from .translate import translate
from .yaml_source import read_yaml

LineOf = Callable[[Path], int | None]
# Turns findings about a config into the error its loader raises: its source, lines and paths.
Explain = Callable[[Iterable[Finding]], ConfigError]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file."""
    return _engine_checked(*_read_file(path))


def parse_config(text: str, source: str = "<string>") -> Config:
    """Validate YAML text; ``source`` names it in errors."""
    return _engine_checked(*_read_text(text, source))


def coerce_config(obj: Config | dict[str, object] | str | os.PathLike[str]) -> Config:
    """Whatever a caller holds, as a checked Config: a Config is re-checked (it may have been
    built or copied without the cross-section checks), a dict is validated, a str or path is
    read as a file."""
    return _engine_checked(*read_config(obj))


def read_config(obj: Config | dict[str, object] | str | os.PathLike[str]) -> tuple[Config, Explain]:
    """Like :func:`coerce_config` but without the engine's own check, with the means to report
    the engine's findings the way the loader reports its own (file, line, path). For callers
    about to hand the config to an engine anyway: its apply compiles the config once, and
    rejects it with the same findings the check would have given."""
    if isinstance(obj, Config):
        explain = _explainer(obj.source or "<config>", _no_lines)
        findings = check_references(obj) + check_endpoint_files(obj)
        if findings:
            raise explain(findings)
        return obj, explain
    if isinstance(obj, dict):
        return _validate(obj, "<dict>", _no_lines)
    if isinstance(obj, (str, os.PathLike)):
        return _read_file(obj)
    raise TypeError(f"expected a Config, a dict or a file path, got {type(obj).__name__}")


def _read_file(path: str | os.PathLike[str]) -> tuple[Config, Explain]:
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"cannot read config file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"config file is not UTF-8 text: {exc.reason}")]) from None
    return _read_text(text, source)


def _read_text(text: str, source: str) -> tuple[Config, Explain]:
    doc = read_yaml(text, source)
    # Relative file paths are read from the config file's folder (text that is not a file:
    # the working directory).
    folder = os.path.dirname(os.path.abspath(source)) if source != "<string>" else os.getcwd()
    return _validate(doc.data, source, doc.line_of, folder)


def _validate(data: object, source: str, line_of: LineOf, folder: str | None = None) -> tuple[Config, Explain]:
    if data is None:
        raise ConfigError(
            [ConfigIssue(source, None, "", "the config is empty; expected a mapping with at least 'listeners'")]
        )
    explain = _explainer(source, line_of)
    try:
        with cycle_collection_paused():
            cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise explain(translate(exc.errors(include_url=False))) from None
    cfg._source = source
    if folder is not None:
        cfg = cfg.with_files_under(folder)
    findings = check_references(cfg) + check_endpoint_files(cfg)
    if findings:
        raise explain(findings)
    return cfg, explain


def _engine_checked(cfg: Config, explain: Explain) -> Config:
    findings = check_engine(cfg)
    if findings:
        raise explain(findings)
    return cfg


def _explainer(source: str, line_of: LineOf) -> Explain:
    def explain(findings: Iterable[Finding]) -> ConfigError:
        return ConfigError(ConfigIssue(source, line_of(f.line_path), format_path(f.path), f.message) for f in findings)

    return explain


def _no_lines(path: Path) -> int | None:
    return None
