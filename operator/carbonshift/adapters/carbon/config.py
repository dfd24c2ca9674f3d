"""Building providers from configuration: names, environment variables, secret files, base URLs.

This module owns the mapping from a provider name (`trace`, `electricitymaps`, `watttime`,
`carbon-aware-sdk`, `gb-carbon-intensity`) and an environment (os.environ in production, a dict in tests) to
a configured provider. Credentials come from `<VAR>` or from the file named by `<VAR>_FILE` (a mounted
Kubernetes Secret); base URLs from `<PROVIDER>_BASE_URL` unless given explicitly.

| provider | credentials | base URL variable |
|---|---|---|
| electricitymaps | ELECTRICITYMAPS_API_TOKEN | ELECTRICITYMAPS_BASE_URL |
| watttime | WATTTIME_USERNAME, WATTTIME_PASSWORD (WATTTIME_SIGNAL_TYPE: co2_moer or co2_aoer) | WATTTIME_BASE_URL |
| carbon-aware-sdk | none | CARBON_AWARE_SDK_BASE_URL |
| gb-carbon-intensity | none | GB_CARBON_INTENSITY_BASE_URL |
"""

from __future__ import annotations

from collections.abc import Mapping

from carbonshift.adapters.carbon import carbon_aware_sdk, electricitymaps, gb_carbon_intensity, watttime
from carbonshift.adapters.carbon.base import CarbonProvider
from carbonshift.adapters.carbon.carbon_aware_sdk import CarbonAwareSdkProvider
from carbonshift.adapters.carbon.electricitymaps import ElectricityMapsProvider
from carbonshift.adapters.carbon.errors import ProviderConfigError
from carbonshift.adapters.carbon.gb_carbon_intensity import GbCarbonIntensityProvider
from carbonshift.adapters.carbon.http import HttpPolicy
from carbonshift.adapters.carbon.secrets import SecretError, read_secret
from carbonshift.adapters.carbon.watttime import WattTimeProvider
from carbonshift.domain.series import Signal

API_PROVIDERS = ("electricitymaps", "watttime", "carbon-aware-sdk", "gb-carbon-intensity")
PROVIDERS = ("trace", *API_PROVIDERS)

BASE_URL_VARS = {
    "electricitymaps": "ELECTRICITYMAPS_BASE_URL",
    "watttime": "WATTTIME_BASE_URL",
    "carbon-aware-sdk": "CARBON_AWARE_SDK_BASE_URL",
    "gb-carbon-intensity": "GB_CARBON_INTENSITY_BASE_URL",
}
DEFAULT_BASE_URLS = {
    "electricitymaps": electricitymaps.DEFAULT_BASE_URL,
    "watttime": watttime.DEFAULT_BASE_URL,
    "carbon-aware-sdk": carbon_aware_sdk.DEFAULT_BASE_URL,
    "gb-carbon-intensity": gb_carbon_intensity.DEFAULT_BASE_URL,
}


def api_provider_from_env(
    name: str,
    env: Mapping[str, str],
    *,
    base_url: str | None = None,
    policy: HttpPolicy | None = None,
) -> CarbonProvider:
    """An API provider configured from `env`. ProviderConfigError for unknown names or missing keys."""
    if name not in API_PROVIDERS:
        raise ProviderConfigError(name, f"unknown provider; expected one of {', '.join(PROVIDERS)}")
    url = base_url or env.get(BASE_URL_VARS[name]) or DEFAULT_BASE_URLS[name]
    try:
        if name == "electricitymaps":
            return ElectricityMapsProvider(read_secret("ELECTRICITYMAPS_API_TOKEN", env), base_url=url, policy=policy)
        if name == "watttime":
            return WattTimeProvider(
                read_secret("WATTTIME_USERNAME", env),
                read_secret("WATTTIME_PASSWORD", env),
                base_url=url,
                signal_type=env.get("WATTTIME_SIGNAL_TYPE", "co2_moer"),
                policy=policy,
            )
    except SecretError as exc:
        raise ProviderConfigError(name, str(exc)) from None
    if name == "carbon-aware-sdk":
        signal = Signal(env.get("CARBON_AWARE_SDK_SIGNAL", "average"))
        return CarbonAwareSdkProvider(base_url=url, signal=signal, policy=policy)
    return GbCarbonIntensityProvider(base_url=url, policy=policy)
