"""Errors raised by carbon-intensity providers.

    ProviderError                   any failure of one provider; `provider` names it
    ├── ProviderConfigError         missing credentials or base URL, unknown zone format
    ├── ProviderAuthError           401/403: bad or expired credentials, endpoint not in the plan
    ├── ProviderRateLimitedError    429 after retries (carries retry_after_seconds when known)
    ├── ProviderUnavailableError    5xx, connection refused, or timeout after retries
    └── ProviderDataError           the answer is unusable: malformed JSON, unexpected shape, empty data,
                                    or every point refused by the quality guards

Messages never contain credentials.
"""

from __future__ import annotations

from carbonshift.domain.quality import RejectedPoint


class ProviderError(Exception):
    """One provider failed to answer usefully."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.remembered = False  # True: served from the negative cache, no request was made


class ProviderConfigError(ProviderError):
    """The provider is not configured well enough to be asked (no key, bad zone)."""


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (401/403)."""


class ProviderRateLimitedError(ProviderError):
    """The provider kept answering 429."""

    def __init__(self, provider: str, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(provider, message)
        self.retry_after_seconds = retry_after_seconds


class ProviderUnavailableError(ProviderError):
    """Server errors, refused connections or timeouts, after bounded retries."""


class ProviderDataError(ProviderError):
    """The provider answered, but with nothing usable. `rejected` holds the refused points, if any."""

    def __init__(self, provider: str, message: str, rejected: list[RejectedPoint] | None = None) -> None:
        super().__init__(provider, message)
        self.rejected = list(rejected or [])
