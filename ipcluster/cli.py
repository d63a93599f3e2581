"""``ipcluster``: start, stop, list and clean clusters, add engines, write a config file.

A thin shell over the Python API: every subcommand builds a :class:`~ipcluster.cluster.Cluster`
(or a :class:`~ipcluster.cluster.ClusterManager`) and calls what a user would call in Python.

Exit codes: 0 success; 1 the operation failed (already running, not found, engines failed to
start, ...); 2 bad command line (argparse's usage error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from ipcluster.cluster.cluster import Cluster

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    from ipcluster import __version__

    parser = argparse.ArgumentParser(
        prog="ipcluster",
        description="Start and stop ipcluster clusters (a controller and its engines).",
    )
    parser.add_argument("--version", action="version", version=f"ipcluster {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add_profile_args(p: argparse.ArgumentParser, cluster_id: bool = True) -> None:
        p.add_argument("--profile", default=None, help="profile name (default: 'default')")
        p.add_argument("--profile-dir", default=None, help="profile directory (overrides --profile)")
        if cluster_id:
            p.add_argument("--cluster-id", default="", help="cluster id within the profile (default: '')")

    start = sub.add_parser("start", help="start a controller and engines",
                           description="Start a controller and N engines; wait until the engines are up.")
    start.add_argument("-n", "--n", type=_positive_int, default=None, dest="n",
                       help="number of engines (default: c.Cluster.n from the profile, else the CPU count)")
    add_profile_args(start)
    start.add_argument("--daemonize", "--daemon", action="store_true",
                       help="return once the engines are up, leaving the cluster running")
    start.add_argument("--ip", default=None, help="address the controller listens on (default 127.0.0.1; "
                       "0.0.0.0: every interface)")
    start.add_argument("--location", default=None, help="address engines and clients connect to (default: "
                       "the --ip address, or this host's name with 0.0.0.0)")
    start.add_argument("--curve", action="store_const", const=True, default=None, dest="curve",
                       help="encrypt every connection with CurveZMQ and accept only the cluster's keys "
                       "(recommended with a non-loopback --ip)")
    start.add_argument("--restart-engines", action="store_const", const=True, default=None,
                       dest="restart_engines", help="start a new engine (same id, startup code run again) in "
                       "place of one that dies")
    start.add_argument("--persist", action="store_const", const=True, default=None,
                       help="keep tasks and results in a persistent store and restart the controller from it "
                            "if it dies (engines and clients reconnect by themselves; the default)")
    start.add_argument("--no-persist", action="store_const", const=False, dest="persist",
                       help="no persistent store: a controller that dies is not restarted")
    start.add_argument("--log-level", default=None, type=str.upper,
                       choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                       help="controller log level")
    start.add_argument("--timeout", type=float, default=None,
                       help="seconds to wait for the engines (default: c.Cluster.engine_timeout, 60)")
    start.add_argument("--engines", default=None, metavar="NAME",
                       help="engine launcher: local, mpi, ssh, slurm, sge, pbs, lsf, htcondor, batch, "
                       "or an import path (default: c.Cluster.engine_launcher_class, local)")
    start.add_argument("--controller", default=None, metavar="NAME",
                       help="controller launcher (default: c.Cluster.controller_launcher_class, local)")

    engines = sub.add_parser("engines", help="add engines to a running cluster",
                             description="Start N more engines for a running cluster and wait until they "
                             "have registered; they stop with the cluster.")
    engines.add_argument("-n", "--n", type=_positive_int, default=None, dest="n",
                         help="number of engines (default: c.Cluster.n, else the CPU count)")
    add_profile_args(engines)
    engines.add_argument("--engines", default=None, metavar="NAME",
                         help="engine launcher (default: c.Cluster.engine_launcher_class, local)")
    engines.add_argument("--timeout", type=float, default=None,
                         help="seconds to wait for the engines (default: c.Cluster.engine_timeout, 60)")

    cfg = sub.add_parser("config", help="write a commented default ipcluster_config.py",
                         description="Write <profile_dir>/ipcluster_config.py listing every option of "
                         "Cluster and the launchers, with help text and defaults, commented out.")
    add_profile_args(cfg, cluster_id=False)
    cfg.add_argument("--force", action="store_true", help="overwrite an existing file")
    cfg.add_argument("--stdout", action="store_true", help="print the file instead of writing it")

    stop = sub.add_parser("stop", help="stop a running cluster")
    add_profile_args(stop)
    stop.add_argument("--all", action="store_true",
                      help="stop every running cluster (of --profile, when given)")

    lst = sub.add_parser("list", help="list clusters")
    lst.add_argument("--profile", default=None, help="only this profile")
    lst.add_argument("--json", action="store_true", help="print a JSON list")

    clean = sub.add_parser("clean", help="remove the files of clusters whose processes are gone")
    clean.add_argument("--profile", default=None, help="only this profile (default: every profile)")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _err(*parts: Any) -> None:
    print(*parts, file=sys.stderr)


# --- start ---------------------------------------------------------------------------------------


def _cluster_from_args(args: argparse.Namespace) -> "Cluster":
    from ipcluster.cluster.cluster import Cluster

    kwargs: dict[str, Any] = {"cluster_id": args.cluster_id}
    for name, trait in (("n", "n"), ("profile", "profile"), ("ip", "controller_ip"),
                        ("location", "controller_location"), ("log_level", "log_level"),
                        ("timeout", "engine_timeout"), ("engines", "engine_launcher_class"),
                        ("controller", "controller_launcher_class"), ("curve", "enable_curve"),
                        ("restart_engines", "restart_engines"), ("persist", "persist")):
        value = getattr(args, name, None)
        if value is not None:
            kwargs[trait] = value
    # a daemonized cluster must outlive this process
    return Cluster(profile_dir=args.profile_dir, shutdown_atexit=not args.daemonize, **kwargs)


def _describe(cluster: "Cluster", n: int) -> str:
    return (f"cluster {cluster.key!r} running: {n} engine{'s' if n != 1 else ''}, "
            f"connection file {cluster.connection_file}")


async def _start(args: argparse.Namespace) -> int:
    from ipcluster.errors import AlreadyRunning, IPClusterError, LauncherError

    cluster = _cluster_from_args(args)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        starting = asyncio.ensure_future(cluster.start_and_connect())
        interrupted = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait({starting, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()  # start_and_connect stops what it started
            await asyncio.gather(starting, return_exceptions=True)
            _err(f"interrupted while starting cluster {cluster.key!r}")
            return EXIT_FAILED
        interrupted.cancel()
        try:
            client = starting.result()
        except AlreadyRunning as e:
            _err(f"ipcluster start: {e}")
            return EXIT_FAILED
        except LauncherError as e:
            _err(f"ipcluster start: engines or controller failed to start: {e}")
            return EXIT_FAILED
        except IPClusterError as e:
            _err(f"ipcluster start: {type(e).__name__}: {e}")
            return EXIT_FAILED
        print(_describe(cluster, len(client.ids)), flush=True)
        if args.daemonize:
            client.close()
            return EXIT_OK
        return await _serve(cluster, stop_requested)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _serve(cluster: "Cluster", stop_requested: asyncio.Event) -> int:
    """Stay in the foreground until a signal, or until the controller exits; then stop."""
    assert cluster.controller is not None
    controller_exit = asyncio.ensure_future(cluster.wait_controller())  # (with --persist: restarted first)
    interrupted = asyncio.ensure_future(stop_requested.wait())
    await asyncio.wait({controller_exit, interrupted}, return_when=asyncio.FIRST_COMPLETED)
    rc = EXIT_OK
    if controller_exit.done() and not interrupted.done():
        code = controller_exit.result()
        if code:
            _err(cluster.controller.failure("the controller exited"))
            rc = EXIT_FAILED
    controller_exit.cancel()
    interrupted.cancel()
    await cluster.stop_cluster()
    print(f"cluster {cluster.key!r} stopped", flush=True)
    return rc


# --- engines, config ------------------------------------------------------------------------------


async def _add_engines(args: argparse.Namespace) -> int:
    from ipcluster.cluster.cluster import Cluster
    from ipcluster.errors import ClusterNotFound, IPClusterError

    try:
        cluster = Cluster.from_file(args.profile, args.cluster_id, args.profile_dir)
    except ClusterNotFound as e:
        _err(f"ipcluster engines: {e}; start one with `ipcluster start`")
        return EXIT_FAILED
    if args.timeout is not None:
        cluster.engine_timeout = args.timeout
    set_id = await cluster.start_engines(args.n, launcher=args.engines)
    launcher = cluster.engines[set_id]
    try:
        client = await cluster.connect_client()
    except (IPClusterError, OSError) as e:
        _err(f"ipcluster engines: the new engines of {cluster.key!r} failed to start: {e}")
        await cluster.stop_engines(set_id)
        return EXIT_FAILED
    job_id = getattr(launcher, "job_id", "")
    job = f", job {job_id}" if job_id else ""
    print(f"added engine set {set_id} ({launcher.name}, {getattr(launcher, 'n', '?')} engines{job}) to "
          f"cluster {cluster.key!r}: {len(client.ids)} engines registered", flush=True)
    client.close()
    return EXIT_OK


def _config(args: argparse.Namespace) -> int:
    from ipcluster.cluster import state
    from ipcluster.cluster.configfile import default_config_text, write_default_config

    if args.stdout:
        print(default_config_text(), end="")
        return EXIT_OK
    pdir = state.resolve_profile_dir(args.profile, args.profile_dir)
    path = write_default_config(pdir, force=args.force)
    print(f"wrote {path}")
    return EXIT_OK


# --- stop, list, clean ---------------------------------------------------------------------------


async def _stop(args: argparse.Namespace) -> int:
    from ipcluster.cluster.cluster import Cluster
    from ipcluster.cluster.manager import ClusterManager
    from ipcluster.cluster.state import cluster_key
    from ipcluster.errors import ClusterNotFound

    if args.all:
        clusters = list(ClusterManager().load_clusters(args.profile, running_only=True).values())
        if not clusters:
            print("no running clusters")
    else:
        try:
            cluster = Cluster.from_file(args.profile, args.cluster_id, args.profile_dir, allow_stopped=True)
        except ClusterNotFound as e:
            _err(f"ipcluster stop: {e}")
            if not args.profile_dir:
                others = ClusterManager().list_clusters(args.profile or "default", running_only=True)
                if others:
                    _err(f"running clusters in this profile: {', '.join(others)} (choose with --cluster-id)")
            return EXIT_FAILED
        if not cluster.running:
            await cluster.stop_cluster()  # removes the stale files
            _err(f"ipcluster stop: cluster {cluster.key!r} is not running (removed its stale files)")
            return EXIT_FAILED
        clusters = [cluster]
    failed = False
    for cluster in clusters:
        key = cluster_key(cluster.profile or "default", cluster.cluster_id or "")
        try:
            await cluster.stop_cluster()
            print(f"stopped cluster {key!r}")
        except Exception as e:
            _err(f"ipcluster stop: stopping {key!r} failed: {e}")
            failed = True
    return EXIT_FAILED if failed else EXIT_OK


def cluster_summary(cluster: "Cluster") -> dict[str, Any]:
    """What ``ipcluster list --json`` prints for one cluster."""
    controller = cluster.controller
    return {
        "key": cluster.key,
        "profile": cluster.profile,
        "cluster_id": cluster.cluster_id,
        "profile_dir": cluster.profile_dir,
        "state": cluster.status,
        "n": sum(getattr(es, "n", 0) for es in cluster.engines.values()),
        "engines_running": cluster.engines_running,
        "controller": None if controller is None else {
            "pid": getattr(controller, "pid", None), "running": controller.running,
            "launcher": controller.name, **_job_fields(controller), **_host_fields(controller),
        },
        "engine_sets": [
            {"id": set_id, "pid": getattr(es, "pid", None), "n": getattr(es, "n", None),
             "running": es.running, "launcher": es.name, **_job_fields(es), **_host_fields(es)}
            for set_id, es in cluster.engines.items()
        ],
        "start_time": cluster.start_time,
        "cluster_file": str(cluster.cluster_file),
        "connection_file": str(cluster.connection_file),
    }


def _host_fields(launcher: Any) -> dict[str, Any]:
    """``hosts`` of a launcher that runs things on other machines (nothing for other launchers)."""
    hosts = getattr(launcher, "hosts", None)
    return {"hosts": list(hosts)} if hosts else {}


def _job_fields(launcher: Any) -> dict[str, Any]:
    """``job_id`` and ``job_state`` of a batch launcher (nothing for other launchers)."""
    if not getattr(launcher, "job_id", ""):
        return {}
    return {"job_id": launcher.job_id, "job_state": launcher.job_state}


def _process_label(what: str, d: dict[str, Any]) -> str:
    if d.get("job_id"):
        return f"{what}=job {d['job_id']} ({d['job_state']})"
    if d.get("hosts"):
        return f"{what}=on {'+'.join(d['hosts'])}"
    return f"{what}={d['pid']}"


def _list(args: argparse.Namespace) -> int:
    from ipcluster.cluster.manager import ClusterManager

    summaries = [cluster_summary(c) for c in ClusterManager().load_clusters(args.profile).values()]
    if args.json:
        print(json.dumps(summaries, indent=1))
        return EXIT_OK
    if not summaries:
        print("no clusters")
        return EXIT_OK
    rows = [("PROFILE", "CLUSTER ID", "ENGINES", "PIDS", "STATE")]
    for s in summaries:
        pids = [_process_label("controller", s["controller"])] if s["controller"] else []
        pids += [_process_label("engines", es) for es in s["engine_sets"]]
        rows.append((s["profile"], repr(s["cluster_id"]) if not s["cluster_id"] else s["cluster_id"],
                     str(s["n"]), ",".join(pids), s["state"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return EXIT_OK


def _clean(args: argparse.Namespace) -> int:
    from ipcluster.cluster.manager import ClusterManager

    removed = ClusterManager().clean(args.profile)
    for path in removed:
        print(f"removed {path}")
    if not removed:
        print("nothing to clean")
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ipcluster`` command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    from ipcluster.errors import IPClusterError

    try:
        if args.command == "start":
            return asyncio.run(_start(args))
        if args.command == "stop":
            return asyncio.run(_stop(args))
        if args.command == "engines":
            return asyncio.run(_add_engines(args))
        if args.command == "config":
            return _config(args)
        if args.command == "list":
            return _list(args)
        if args.command == "clean":
            return _clean(args)
    except IPClusterError as e:
        _err(f"ipcluster {args.command}: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it first
    return EXIT_USAGE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
