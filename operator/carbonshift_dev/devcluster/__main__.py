"""`python -m carbonshift_dev.devcluster up|down|status`: the dev cluster from the command line.

`up` starts a cluster and stays in the foreground until Ctrl-C (or SIGTERM), then stops every process it
started. `up --detach` returns once the cluster is ready and leaves it running; it prints only the
`export KUBECONFIG=...` line on stdout (progress goes to stderr), so `eval "$(... up --detach)"` works.
`down` stops a detached cluster by the PIDs recorded in its state file.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from carbonshift_dev.devcluster.binaries import MissingBinaryError
from carbonshift_dev.devcluster.cluster import (
    STATE_FILE,
    ClusterConfig,
    ClusterStartError,
    DevCluster,
    default_cluster_dir,
    stop_detached,
)
from carbonshift_dev.devcluster.processes import ProcessExitedError

EXIT_FAILURE = 1


def _progress(message: str) -> None:
    print(f"devcluster: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m carbonshift_dev.devcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a dev cluster")
    up.add_argument("--name", default="carbonshift-dev", help="cluster name (default: %(default)s)")
    up.add_argument("--nodes", type=int, default=2, help="fake GPU nodes (default: %(default)s)")
    up.add_argument("--gpus-per-node", type=int, default=8, help="nvidia.com/gpu per node (default: %(default)s)")
    up.add_argument(
        "--zones",
        default="zone-a,zone-b",
        help="comma-separated topology.kubernetes.io/zone values, assigned round-robin (default: %(default)s)",
    )
    up.add_argument("--dir", type=Path, help="cluster directory (default: per-name directory under the temp dir)")
    up.add_argument("--detach", action="store_true", help="leave the cluster running and return")
    up.add_argument("--timeout", type=float, default=180.0, help="startup timeout in seconds (default: %(default)s)")
    for name, help_text in (("down", "stop a detached dev cluster"), ("status", "show a detached dev cluster")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--name", default="carbonshift-dev", help="cluster name (default: %(default)s)")
        cmd.add_argument("--dir", type=Path, help="cluster directory (overrides --name)")
    return parser


def _up(args: argparse.Namespace) -> int:
    zones = tuple(z.strip() for z in args.zones.split(",") if z.strip())
    config = ClusterConfig(
        name=args.name,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        zones=zones,
        startup_timeout_seconds=args.timeout,
    )
    workdir: Path | None = args.dir
    if args.detach:
        workdir = workdir or default_cluster_dir(args.name)
        if (workdir / STATE_FILE).is_file():
            existing = DevCluster.attach(workdir)
            if existing.running_processes():
                _progress(f"{args.name} is already running ({workdir}); `down` stops it")
                print(existing.export_line())
                return 0
            existing.stop()  # stale state from a crashed run: clean it up
    cluster = DevCluster.start(config, workdir=workdir, detach=args.detach, progress=_progress)
    if args.detach:
        print(cluster.export_line(), flush=True)
        return 0
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _progress(f"received {signal.Signals(signum).name}, stopping")
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(cluster.export_line(), flush=True)
    _progress("running in the foreground; Ctrl-C stops it")
    try:
        while not stop.wait(1.0):
            cluster.check_running()
    finally:
        cluster.stop()
    return 0


def _target_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir) if args.dir else default_cluster_dir(args.name)


def _down(args: argparse.Namespace) -> int:
    workdir = _target_dir(args)
    if not (workdir / STATE_FILE).is_file():
        _progress(f"no detached cluster in {workdir}")
        return 0
    stopped = stop_detached(workdir)
    _progress(f"stopped {', '.join(stopped) if stopped else 'nothing (no process was running)'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    workdir = _target_dir(args)
    if not (workdir / STATE_FILE).is_file():
        print(f"no detached cluster in {workdir}")
        return EXIT_FAILURE
    cluster = DevCluster.attach(workdir)
    running = set(cluster.running_processes())
    print(f"{cluster.name}: {cluster.server_url}  {cluster.export_line()}")
    for process in cluster.processes:
        state = "running" if process.name in running else "stopped"
        print(f"  {process.name:<24} pid {process.pid:<8} {state}  log {process.log_path}")
    return 0 if len(running) == len(cluster.processes) else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            return _down(args)
        return _status(args)
    except (MissingBinaryError, ClusterStartError, ProcessExitedError) as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
