"""Carbon-intensity providers: Electricity Maps, WattTime, the Carbon Aware SDK, NESO (GB), static traces.

Everything here does I/O (HTTP or files) and turns what it reads into carbonshift.domain IntensitySeries
through the quality guards. Modules:

* base - the CarbonProvider interface, ProviderResult and the shared guard pipeline
* http - timeouts, bounded retries with backoff honouring Retry-After
* secrets - credentials from env vars or mounted files, never printed
* electricitymaps, watttime, carbon_aware_sdk, gb_carbon_intensity, trace - the providers
* cache - answers reused to the provider's resolution, bounded stale fallback
* chain - the configured fallback order ending in an explicit no-data state
* config - building providers from names and environment variables
"""

from carbonshift.adapters.carbon.base import CarbonProvider, ProviderResult
from carbonshift.adapters.carbon.cache import CachedProvider
from carbonshift.adapters.carbon.chain import ChainLink, ChainResult, FallbackChain, ProviderFailure
from carbonshift.adapters.carbon.errors import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderDataError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from carbonshift.adapters.carbon.http import HttpPolicy
from carbonshift.adapters.carbon.trace import TraceProvider

__all__ = [
    "CachedProvider",
    "CarbonProvider",
    "ChainLink",
    "ChainResult",
    "FallbackChain",
    "HttpPolicy",
    "ProviderAuthError",
    "ProviderConfigError",
    "ProviderDataError",
    "ProviderError",
    "ProviderFailure",
    "ProviderRateLimitedError",
    "ProviderResult",
    "ProviderUnavailableError",
    "TraceProvider",
]
