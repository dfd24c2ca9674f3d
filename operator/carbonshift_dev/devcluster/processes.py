"""Starting and stopping the dev cluster's child processes, by PID.

Each process runs in its own session (so a Ctrl-C in the terminal reaches only the launcher, which then stops
the children in order) and writes stdout and stderr to one log file. Stopping sends SIGTERM, waits, then
SIGKILL. A process recorded by an earlier launcher (detached mode) is stopped only if its PID still runs the
recorded executable, so a reused PID is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.05

_handed_out_ports: set[int] = set()
_ports_lock = threading.Lock()


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and this process has not handed out before."""
    with _ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ProcessExitedError(RuntimeError):
    """A child process exited while the cluster was starting or running."""


@dataclass
class ManagedProcess:
    """One child process: its name, PID, executable and log file."""

    name: str
    pid: int
    executable: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls, name: str, argv: Sequence[str], log_path: Path, cwd: Path, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        """`env`: variables added to this process's environment for the child."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        return cls(name=name, pid=popen.pid, executable=str(argv[0]), log_path=log_path, popen=popen)

    def exit_code(self) -> int | None:
        """The exit code once the process has ended, else None."""
        if self.popen is not None:
            return self.popen.poll()
        return None if _runs_executable(self.pid, self.executable) else -1

    def check_running(self) -> None:
        """Raise ProcessExitedError, with the tail of its log, if the process has ended."""
        code = self.exit_code()
        if code is not None:
            raise ProcessExitedError(
                f"{self.name} (pid {self.pid}) exited with code {code}; last log lines from {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM, wait up to grace_seconds, then SIGKILL. Safe to call twice."""
        if self.exit_code() is not None:
            return
        _signal(self.pid, signal.SIGTERM)
        if self._wait(grace_seconds):
            return
        _signal(self.pid, signal.SIGKILL)
        self._wait(grace_seconds)

    def _wait(self, timeout_seconds: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if not _runs_executable(self.pid, self.executable):
                return True
            time.sleep(_POLL_SECONDS)
        return False

    def rss_bytes(self) -> int | None:
        """Resident memory of the process (Linux /proc), or None where it cannot be read."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text(encoding="utf-8")
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return None

    def to_record(self) -> dict[str, str | int]:
        return {"name": self.name, "pid": self.pid, "executable": self.executable, "log": str(self.log_path)}

    @classmethod
    def from_record(cls, record: dict[str, str | int]) -> ManagedProcess:
        return cls(
            name=str(record["name"]),
            pid=int(record["pid"]),
            executable=str(record["executable"]),
            log_path=Path(str(record["log"])),
        )


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _runs_executable(pid: int, executable: str) -> bool:
    """Whether `pid` is alive and (where /proc exists) still runs `executable`, not a reused PID."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        stat = (proc / "stat").read_text(encoding="utf-8")
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode("utf-8", errors="replace")
    except OSError:
        return False
    return argv0 == executable
