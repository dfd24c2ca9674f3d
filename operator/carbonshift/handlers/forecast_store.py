"""Each zone's `ForecastRecord` kept across restarts, in a ConfigMap of the operator's namespace.

The record (domain/forecast_trust.py) is what do no harm learns about a provider's forecasts: the day-ahead
forecasts scored for the measured error, and the forecasts issued every 6 hours backtested for the shown skill. Kept
in memory only, a restart (an upgrade, a rescheduled pod) forgot a week of it: the error fell back to the prior and
the skill gate was off until four windows had ended again. Now each zone's record is written to the ConfigMap
`carbonshift-forecasts-<zone>-<hash>` whenever it records a forecast (a new 6-hour issue or day-ahead forecast: a
few times a day), and read back the first time the zone is needed after a start.

A ConfigMap holds at most 1 MiB. Three weeks of issued forecasts (the skill's backtest since session 14) fit
easily on 30-minute or hourly slots (about 110 KiB and 58 KiB), but on a provider's 5-minute slots (WattTime,
about 800 KiB) they come near it; a record whose JSON would exceed `MAX_BYTES` is written with only the newest
issues that fit (the backtest read back then spans less, and the skill is counted lower for it), said once in
the log.

Failures never stop a reconcile: a ConfigMap that cannot be read (another version, damaged) or an API error on
reading is logged and the record starts afresh; a write that fails is logged (a warning the first time, then at
debug level) and made again at the next recorded forecast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from kubernetes.client.exceptions import ApiException

from carbonshift.adapters.kube import Kube, KubeUnavailableError
from carbonshift.domain.forecast_trust import ForecastRecord

log = logging.getLogger(__name__)

PREFIX = "carbonshift-forecasts-"
MAX_BYTES = 900 * 1024  # under a ConfigMap's 1 MiB, with room for its metadata
KEY = "record.json"
LABELS = {"app.kubernetes.io/part-of": "carbonshift", "carbonshift.io/forecast-record": "true"}


def config_map_name(zone: str) -> str:
    """A DNS-1123 name per zone: a readable part and a hash (zones such as CAISO_NORTH or US-CAL-CISO differ in
    case and punctuation, which the readable part loses)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", zone.lower()).strip("-")[:30].strip("-") or "zone"
    digest = hashlib.sha256(zone.encode()).hexdigest()[:8]
    return f"{PREFIX}{slug}-{digest}"


@dataclass
class ForecastStore:
    """Reads and writes the zones' records through `kube` in `namespace` (the operator's own)."""

    kube: Kube
    namespace: str
    saved: dict[str, int] = field(default_factory=dict)  # zone -> the record's revision last written (or read)
    _warned: bool = field(default=False, repr=False)
    _trimmed: set[str] = field(default_factory=set, repr=False)  # zones whose record was written trimmed (logged)

    async def record(self, records: dict[str, ForecastRecord], zone: str, now: datetime) -> ForecastRecord:
        """The zone's record: the one in memory, else the one kept in its ConfigMap, else a new one."""
        existing = records.get(zone)
        if existing is not None:
            return existing
        record = ForecastRecord()
        name = config_map_name(zone)
        try:
            data = await self.kube.read_config_map(self.namespace, name)
            if data is not None and KEY in data:
                record = ForecastRecord.from_wire(json.loads(data[KEY]), now)
                log.info("zone %s: read the recorded forecasts back from ConfigMap %s/%s", zone, self.namespace, name)
        except ValueError as exc:  # (json.JSONDecodeError is one)
            log.warning("zone %s: ConfigMap %s/%s cannot be read (%s); recording afresh", zone, self.namespace, name,
                        exc)  # fmt: skip
        except (ApiException, KubeUnavailableError, OSError) as exc:
            log.warning("zone %s: could not read ConfigMap %s/%s (%s); recording afresh", zone, self.namespace, name,
                        _why(exc))  # fmt: skip
        kept = records.setdefault(zone, record)  # (another pass may have made one meanwhile: that one stands)
        self.saved.setdefault(zone, kept.revision)
        return kept

    async def save(self, zone: str, record: ForecastRecord) -> None:
        """Write the record if it recorded a forecast since it was last written."""
        if self.saved.get(zone) == record.revision:
            return
        self.saved[zone] = record.revision  # (before the write: passes running beside this one do not write it too)
        name = config_map_name(zone)
        text = self._fitting(zone, record)
        labels = {**LABELS, "carbonshift.io/zone-hash": name.rsplit("-", 1)[1]}
        try:
            await self.kube.write_config_map(self.namespace, name, {KEY: text}, labels)
        except (ApiException, KubeUnavailableError, OSError) as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "zone %s: could not keep the recorded forecasts in ConfigMap %s/%s (%s); they are kept "
                    "in memory and written again at the next recorded forecast", zone, self.namespace, name,
                    _why(exc))  # fmt: skip

    def _fitting(self, zone: str, record: ForecastRecord) -> str:
        """The record's JSON, with only the newest issued forecasts where all of them would exceed `MAX_BYTES`."""
        wire = record.to_wire()
        text = _dumps(wire)
        issued = wire["issued"]
        total = len(issued)
        while len(text.encode()) > MAX_BYTES and issued:
            issued = issued[max(len(issued) // 8, 1) :]  # (oldest first: drop the oldest eighth)
            text = _dumps({**wire, "issued": issued})
        if len(issued) < total and zone not in self._trimmed:
            self._trimmed.add(zone)
            log.info("zone %s: the recorded forecasts exceed what a ConfigMap holds; keeping the newest %d of %d "
                     "issued forecasts across restarts (all of them in memory)", zone, len(issued), total)  # fmt: skip
        return text


def _dumps(wire: dict[str, object]) -> str:
    return json.dumps(wire, separators=(",", ":"), allow_nan=False)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__
