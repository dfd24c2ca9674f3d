"""HTTP plumbing shared by the carbon providers: timeouts, bounded retries, backoff, Retry-After.

This module owns how a provider call behaves on the wire. Every GET, retries and waits included, ends within
`HttpPolicy.budget_seconds` (15 s): an attempt gets at most the time left, and a retry whose wait would not
leave time for an answer is not made. A call is retried (at most
`HttpPolicy.max_attempts` times in all) on timeouts, refused connections and HTTP 429/500/502/503/504,
waiting `backoff_initial_seconds * 2**(attempt-1)` (capped at `backoff_max_seconds`), or the server's
`Retry-After` when that is longer (seconds, or an HTTP date measured against the response's own `Date`
header, so no wall clock is read). A `Retry-After` beyond `retry_after_max_seconds` is not waited for:
the call fails at once so the fallback chain can move on. 401/403 and other 4xx are not retried.
Errors never carry credentials: response snippets are redacted and httpx exceptions are not chained; a 401/403
names the variable, file or Secret key the credential came from. Retry warnings go through logging
(`carbonshift.carbon`), each starting with "carbon provider <name>:".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from carbonshift.adapters.carbon.errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderDataError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from carbonshift.adapters.carbon.secrets import Secret, describe_sources, redact

logger = logging.getLogger("carbonshift.carbon")

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
Sleep = Callable[[float], Awaitable[None]]
asyncio_sleep: Sleep = asyncio.sleep


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """Timeouts and retry budget of one provider."""

    timeout_seconds: float = 10.0
    max_attempts: int = 4
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    retry_after_max_seconds: float = 120.0
    budget_seconds: float = 15.0
    """The most one GET may take, every attempt and wait included."""

    def backoff_seconds(self, attempt: int) -> float:
        """Wait before attempt `attempt + 1` (attempt counts from 1)."""
        return float(min(self.backoff_initial_seconds * 2 ** (attempt - 1), self.backoff_max_seconds))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's Retry-After in seconds, or None when absent or unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    date_header = headers.get("date")
    if date_header is None:
        return None
    try:
        until = parsedate_to_datetime(value)
        server_now = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    if until.tzinfo is None or server_now.tzinfo is None:
        return None
    return max((until - server_now).total_seconds(), 0.0)


class JsonHttp:
    """GET JSON from one provider's base URL with the retry policy; owns (or borrows) an httpx client."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        policy: HttpPolicy | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        secrets: Iterable[Secret | None] = (),
        sleep: Sleep = asyncio.sleep,
        no_credentials_hint: str = "",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ProviderConfigError(provider, f"base URL must start with http:// or https://, got {base_url!r}")
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.policy = policy or HttpPolicy()
        self._client = client
        self._owns_client = client is None
        self._secrets = list(secrets)
        self._credentials = [secret for secret in self._secrets if secret is not None]
        self._sleep = sleep
        self._no_credentials_hint = no_credentials_hint

    def add_secret(self, secret: Secret) -> None:
        """Also redact `secret` (e.g. a session token obtained later) from error messages."""
        self._secrets.append(secret)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.policy.timeout_seconds))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    def auth_advice(self) -> str:
        """What to check after a 401/403: where each credential came from (never its value)."""
        if self._credentials:
            return f"credentials refused; check {describe_sources(self._credentials)}"
        hint = f"; {self._no_credentials_hint}" if self._no_credentials_hint else ""
        return f"access refused, and carbonshift sends no credentials to {self.provider}{hint}"

    def _snippet(self, response: httpx.Response) -> str:
        text = response.text[:200].replace("\n", " ")
        return redact(text, self._secrets)

    async def get(
        self,
        path: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> httpx.Response:
        """GET with retries; returns the final non-retryable response (2xx, or a 4xx for the caller to
        judge). Raises ProviderUnavailableError/ProviderRateLimitedError when retries run out."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        what = f"GET {path}"
        loop = asyncio.get_running_loop()
        budget = self.policy.budget_seconds
        deadline = loop.time() + budget
        attempt = 0
        while True:
            attempt += 1
            limit = min(self.policy.timeout_seconds, max(deadline - loop.time(), 0.001))
            try:
                async with asyncio.timeout(limit):  # a hard bound: httpx's timeout is per read, not per answer
                    response = await self._http().get(
                        url,
                        params=params,
                        headers=headers,
                        auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                        timeout=limit,
                    )
            except (httpx.TimeoutException, TimeoutError):
                failure = f"{what} timed out after {limit:.3g}s"
                wait = self.policy.backoff_seconds(attempt)
                retry_after = None
                status = None
            except httpx.TransportError as exc:
                failure = f"{what} failed: {type(exc).__name__}"
                wait = self.policy.backoff_seconds(attempt)
                retry_after = None
                status = None
            else:
                status = response.status_code
                if status not in RETRYABLE_STATUS:
                    return response
                retry_after = retry_after_seconds(response.headers)
                failure = f"{what} answered HTTP {status}: {self._snippet(response)}"
                wait = max(self.policy.backoff_seconds(attempt), retry_after or 0.0)
                if retry_after is not None and retry_after > self.policy.retry_after_max_seconds:
                    self._give_up(failure, attempt, status, retry_after, beyond_limit=True)
            if attempt >= self.policy.max_attempts:
                self._give_up(failure, attempt, status, retry_after)
            left = deadline - loop.time()
            if wait >= left:
                self._give_up(failure, attempt, status, retry_after, budget_spent=True)
            logger.warning(
                "carbon provider %s: %s; retry %d/%d in %.2fs",
                self.provider,
                failure,
                attempt,
                self.policy.max_attempts - 1,
                wait,
            )
            await self._sleep(wait)

    def _give_up(
        self,
        failure: str,
        attempts: int,
        status: int | None,
        retry_after: float | None,
        beyond_limit: bool = False,
        budget_spent: bool = False,
    ) -> None:
        if beyond_limit:
            message = (
                f"{failure}; Retry-After {retry_after:g}s exceeds the {self.policy.retry_after_max_seconds:g}s limit"
            )
        elif budget_spent:
            message = (
                f"{failure} (gave up after {attempts} attempts: no time left in the "
                f"{self.policy.budget_seconds:g}s budget of one call)"
            )
        else:
            message = f"{failure} (gave up after {attempts} attempts)"
        if status == 429:
            raise ProviderRateLimitedError(self.provider, message, retry_after)
        raise ProviderUnavailableError(self.provider, message)

    async def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        allow_no_content: bool = False,
    ) -> Any:
        """GET and decode JSON. 401/403 -> ProviderAuthError, other 4xx -> ProviderConfigError (404:
        ProviderDataError), 204 -> None when `allow_no_content`, else ProviderDataError."""
        response = await self.get(path, params=params, headers=headers, auth=auth)
        return self.decode(path, response, allow_no_content=allow_no_content)

    def decode(self, path: str, response: httpx.Response, *, allow_no_content: bool = False) -> Any:
        status = response.status_code
        what = f"GET {path}"
        if status in (401, 403):
            raise ProviderAuthError(self.provider, f"{what} answered HTTP {status}: {self.auth_advice()}")
        if status == 404:
            raise ProviderDataError(self.provider, f"{what} answered HTTP 404: {self._snippet(response)}")
        if 400 <= status < 500:
            raise ProviderConfigError(self.provider, f"{what} answered HTTP {status}: {self._snippet(response)}")
        if status == 204 or (status == 200 and not response.content):
            if allow_no_content:
                return None
            raise ProviderDataError(self.provider, f"{what} answered HTTP {status} with no content")
        if not 200 <= status < 300:
            raise ProviderUnavailableError(self.provider, f"{what} answered HTTP {status}")
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProviderDataError(
                self.provider, f"{what} returned malformed JSON: {self._snippet(response)!r}"
            ) from None
