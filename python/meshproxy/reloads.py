"""Reloads as a running sidecar takes them — on SIGHUP, when the config file changes, on ``POST
/reload`` — all through :meth:`Proxy.reload`, which runs them one at a time and counts their
outcomes, and all logged in the same words: the version a reload made, or why it was refused
(for a file, the message ``meshproxy validate`` gives) and that the running config stays.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import _native

if TYPE_CHECKING:
    from .proxy import Proxy

log = logging.getLogger("meshproxy")


class Refused(Exception):
    """A reload that changed nothing; ``message`` says why, as it was logged. ``conflict`` is
    set when the proxy could not reload at all (stopped, or not given a file), as opposed to a
    config that was refused."""

    def __init__(self, message: str, *, conflict: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.conflict = conflict


def reload_and_log(proxy: Proxy, trigger: str) -> int:
    """Reloads ``proxy`` from its source and logs the outcome, naming ``trigger`` (what asked
    for it). Returns the new config version; raises :class:`Refused`."""
    admin = proxy.admin_address
    source = proxy.document.source
    try:
        version = proxy.reload()
    except RuntimeError as error:
        log.error("reload (%s) not possible: %s", trigger, error)
        raise Refused(str(error), conflict=True) from None
    except Exception as error:  # noqa: BLE001 (whatever went wrong, the running config stays)
        # A ConfigError, the engine's ConfigRejected, the validator's refusal; an OSError for an
        # address that cannot be bound.
        message = refusal_message(error, source)
        log.error("reload (%s) refused, keeping the running config:\n%s", trigger, message)
        raise Refused(message) from None
    log.info("reloaded %s: config version %d (%s)", source, version, trigger)
    if proxy.admin_address is not None and proxy.admin_address != admin:
        log.info("admin on http://%s/", proxy.admin_address)
    return version


def refusal_message(error: BaseException, source: str | None) -> str:
    """Why a config was refused, in the words ``meshproxy validate`` uses where it can."""
    if isinstance(error, _native.ConfigRejected):
        return engine_problems(source, error)
    if isinstance(error, OSError) and source is not None:
        return f"{source}: {error}"
    return str(error)


def engine_problems(source: str | None, error: _native.ConfigRejected) -> str:
    """The engine's refusal, one ``FILE: PATH: MESSAGE`` line per problem (no line numbers:
    the engine reads the document, not the file; the validator reports these with lines)."""
    problems: list[tuple[str, str]] = error.args[1]
    prefix = f"{source}: " if source is not None else ""
    return "\n".join(f"{prefix}{at}: {message}" if at else f"{prefix}{message}" for at, message in problems)
