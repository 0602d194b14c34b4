"""``meshctl``'s side of the HTTP API (see :mod:`.api`): one call per command, with every
failure turned into a :class:`ClientError` whose message is what meshctl prints.

stdlib urllib, not httpx: a CLI's start-up time is the user's wait, and this needs one request.
Proxies from the environment are ignored on purpose: in a mesh, ``HTTP_PROXY`` points an app at
its sidecar, and the control plane must be reached directly.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT_S = 30


class ClientError(Exception):
    """A failed call. ``issues``: the apply's problems, each a ``FILE:LINE: PATH: MESSAGE``
    line to print as is."""

    def __init__(self, message: str, issues: list[str] | None = None) -> None:
        super().__init__(message)
        self.issues = issues


class Client:
    def __init__(self, server: str, api_token: str | None = None) -> None:
        self.server = server.rstrip("/")
        if "://" not in self.server:
            self.server = "http://" + self.server
        self.api_token = api_token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str, **query: str) -> Any:
        return self.call("GET", path, query=query)

    def call(
        self, method: str, path: str, *, body: bytes | None = None, json_body: Any = None,
        query: dict[str, str] | None = None, raw: bool = False,
    ) -> Any:
        """The decoded JSON answer (or the raw bytes with ``raw``); ClientError on any failure."""
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
        headers = {"Accept": "application/json"}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_token:
            headers["Authorization"] = f"Bearer {self.api_token}"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=TIMEOUT_S) as response:
                data: bytes = response.read()
        except urllib.error.HTTPError as error:
            raise self._refused(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ClientError(
                f"cannot reach the control plane at {self.server} ({_reason(reason)}); is 'meshctl serve' running? "
                "(set the address with --server or MESHCTL_SERVER)"
            ) from None
        if raw:
            return data
        try:
            return json.loads(data)
        except ValueError:
            raise ClientError(f"{self.server} answered {path} with something that is not JSON; is it a control plane?") from None

    def _refused(self, error: urllib.error.HTTPError) -> ClientError:
        try:
            answer = json.loads(error.read())
        except ValueError:
            answer = {}
        message = answer.get("error") if isinstance(answer, dict) else None
        if error.code == 401:
            hint = "pass the API token with --api-token-file FILE or MESHCTL_TOKEN"
            return ClientError(f"the control plane at {self.server} refused the request: {message or 'unauthorized'}; {hint}")
        if error.code == 404 and not message:
            message = f"{self.server} has no {error.url}; is it a control plane?"
        issues = answer.get("issues") if isinstance(answer, dict) else None
        text = message or f"HTTP {error.code} {error.reason}"
        return ClientError(text, [str(i) for i in issues] if isinstance(issues, list) else None)


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(getattr(reason, "strerror", None) or reason)
