"""The operator's clock: wall time, or planning time running faster than the wall clock.

Production uses `Clock()` (wall time). Tests and the demo use an accelerated clock, e.g.
`Clock.parse("speed=288,epoch=2020-03-01T00:00:00Z,anchor=1795484145")`: planning time is `epoch` at wall time
`anchor` and runs `speed` times faster, so a day of grid intensity passes in five minutes. The anchor is fixed, so an
operator that is killed and restarted with the same setting sees the same time, never a jump backwards. Every
handler reads time from here, never from `datetime.now`, so the fast clock runs exactly the production code path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Clock:
    speed: float = 1.0
    epoch: datetime | None = None
    anchor: float = 0.0

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"clock speed must be positive, got {self.speed}")
        if self.epoch is not None and self.epoch.tzinfo is None:
            raise ValueError("clock epoch must carry a timezone (UTC)")

    @classmethod
    def parse(cls, text: str) -> Clock:
        """`speed=S,epoch=RFC3339[,anchor=UNIX_SECONDS]`; an empty text is the wall clock."""
        if not text.strip():
            return cls()
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in {"speed", "epoch", "anchor"}:
                raise ValueError(f"bad clock setting {part!r}: use speed=S,epoch=RFC3339[,anchor=UNIX_SECONDS]")
            fields[key.strip()] = value.strip()
        epoch = datetime.fromisoformat(fields["epoch"].replace("Z", "+00:00")) if "epoch" in fields else None
        return cls(
            speed=float(fields.get("speed", "1")),
            epoch=epoch,
            anchor=float(fields.get("anchor", time.time())),
        )

    def now(self) -> datetime:
        """Planning time now (UTC)."""
        wall = time.time()
        if self.epoch is None:
            return datetime.fromtimestamp(wall, UTC)
        return self.epoch + timedelta(seconds=(wall - self.anchor) * self.speed)

    def from_wall(self, wall: datetime) -> datetime:
        """The planning time of a wall-clock moment (e.g. an object's creationTimestamp)."""
        if self.epoch is None:
            return wall
        return self.epoch + timedelta(seconds=(wall.timestamp() - self.anchor) * self.speed)

    def wall_seconds(self, planning: timedelta) -> float:
        """How many wall-clock seconds a stretch of planning time takes."""
        return max(planning.total_seconds() / self.speed, 0.0)
