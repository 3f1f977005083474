"""``zonesim serve``, ``submit``, ``status`` and ``cancel``: the sweep service (``cluster.service``, a
named, detached Ray actor) started and spoken to from the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from cluster.cli_base import UsageError, check_port, metrics_flags, note
from cluster.store import StoreError
from cluster.text import table
from core.errors import ConfigError, StreamError
from workloads.errors import TraceError

# -- the service ----------------------------------------------------------------------------------


def _join_ray(address: str | None, embedded: bool = False) -> bool:
    """Join ``address``, else RAY_ADDRESS, else the cluster this machine runs (``ray start`` or a
    `zonesim serve` in the foreground); with ``embedded``, start one if there is none. Returns
    whether an embedded instance was started."""
    from cluster.executor import init_ray

    try:
        return init_ray(address, running_only=True)
    except ConnectionError:
        if not embedded:
            raise UsageError("no Ray cluster found: give --address, set RAY_ADDRESS, or start one "
                             "(`ray start --head`, or `zonesim serve` in another terminal)") from None
    return init_ray()


def _call(method, *args):
    """A coordinator call; the actor's ConfigError / StreamError / TraceError / StoreError come back as themselves."""
    import ray

    try:
        return ray.get(method.remote(*args))
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, ConfigError | StreamError | TraceError | StoreError):
            raise err.cause from None
        raise


def _show_status(rows: list[dict]) -> None:
    header = ("sweep", "state", "done", "failed", "directory")
    print("\n".join(table([header] + [(r["name"], r["state"], f"{r.get('done', 0)}/{r.get('total', 0)}",
                                       str(r.get("failed", 0)), r.get("directory", "")) for r in rows])))


def cmd_serve(args: argparse.Namespace) -> int:
    from cluster import service

    if args.parallel < 1:
        raise ConfigError("parallel", "an integer >= 1", args.parallel)
    check_port(args)
    embedded = _join_ray(args.address, embedded=True)
    metrics = None if args.no_metrics else (args.metrics_host, args.metrics_port)
    handle = service.start(os.path.abspath(args.root), args.parallel, metrics)
    running = _call(handle.ping)
    if running != os.path.abspath(args.root):  # get_if_exists: the cluster's service is already up
        raise ConfigError("root", f"a zonesim service already runs in this cluster, its sweeps under {running}; "
                          "submit to it, or give that root", args.root)
    if metrics:
        print(f"metrics: http://{args.metrics_host}:{args.metrics_port}/metrics (on the node running the actor)")
    print(f"zonesim service running ({service.NAMESPACE}/{service.NAME}), sweeps under {os.path.abspath(args.root)}")
    if not embedded:
        return 0  # the detached actor lives in the cluster
    print("embedded Ray: serving until interrupted (zonesim submit / status / cancel from another terminal)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from cluster import service

    try:
        with open(args.spec, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("spec", f"a readable UTF-8 TOML file ({err})", args.spec) from None
    _join_ray(args.address)
    reply = _call(service.connect().submit, text, args.spec, args.force)
    for line in reply.pop("notes", []):
        note(line)
    _show_status([reply])
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from cluster import service

    _join_ray(args.address)
    rows = _call(service.connect().status, args.sweep)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _show_status(rows)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from cluster import service

    _join_ray(args.address)
    _show_status([_call(service.connect().cancel, args.sweep)])
    return 0


def add_service_parsers(sub: argparse._SubParsersAction) -> None:
    address = {"help": "Ray cluster (default: RAY_ADDRESS, else the cluster running on this machine)"}
    sv = sub.add_parser("serve", help="run the sweep service: a named, detached Ray actor that queues sweeps",
                        parents=[metrics_flags(service=True)])
    sv.add_argument("--address", **address)
    sv.add_argument("--root", default="sweeps", help="where the service keeps its sweeps (default ./sweeps)")
    sv.add_argument("--parallel", type=int, default=1, help="sweeps run at once (default 1)")
    sv.set_defaults(func=cmd_serve)
    sb = sub.add_parser("submit", help="queue a sweep spec on the service")
    sb.add_argument("spec", help="sweep spec file (TOML)")
    sb.add_argument("--address", **address)
    sb.add_argument("--force", action="store_true", help="a changed spec under an existing name: start over")
    sb.set_defaults(func=cmd_submit)
    st = sub.add_parser("status", help="the service's sweeps: state and progress")
    st.add_argument("sweep", nargs="?", help="one sweep (default: all)")
    st.add_argument("--address", **address)
    st.add_argument("--json", action="store_true", help="print as JSON")
    st.set_defaults(func=cmd_status)
    cn = sub.add_parser("cancel", help="cancel a queued or running sweep (its records are kept)")
    cn.add_argument("sweep", help="sweep name")
    cn.add_argument("--address", **address)
    cn.set_defaults(func=cmd_cancel)
