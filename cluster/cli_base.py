"""What every ``zonesim`` subcommand module shares: the program name, the one-line usage error and
the parser that raises it, a store's notes said on stderr, and the metrics flags (``--metrics-host``,
``--metrics-port``, ``--metrics-grace``, ``--pushgateway``, ``--no-metrics``) declared once as an
argparse parent, with their default ports (those ``deploy/prometheus`` scrapes). ``cluster.metrics``
(and prometheus_client, some 20 ms) is imported only by the commands that serve metrics.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from core.errors import ConfigError

PROG = "zonesim"
SWEEP_PORT, SERVICE_PORT = 9464, 9465  # a sweep's /metrics endpoint, the service's
GRACE = 15.0  # seconds a watched sweep's endpoint stays up: one Prometheus scrape interval and then some


class UsageError(Exception):
    """A malformed command line, reported like a ConfigError: one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse reports errors as usage plus message over several lines; zonesim wants one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def note(line: str) -> None:
    """What a store said of its legacy log (``cluster.sweep.store_notes``): one line on stderr."""
    print(f"{PROG}: {line}", file=sys.stderr)


def metrics_flags(service: bool = False) -> argparse.ArgumentParser:
    """The metrics flags as a parent parser: a sweep's endpoint (``SWEEP_PORT``, 0 for any free
    port, a grace wait and a Pushgateway at its end) or the service's (``SERVICE_PORT``, fixed:
    Prometheus is configured with it)."""
    flags = argparse.ArgumentParser(add_help=False)
    port = SERVICE_PORT if service else SWEEP_PORT
    flags.add_argument("--metrics-host", default="127.0.0.1", help="address of the /metrics endpoint "
                       "(default 127.0.0.1)")
    flags.add_argument("--metrics-port", type=int, default=port,
                       help=f"its port (default {port}" + (")" if service else "; 0: any free port)"))
    if not service:
        flags.add_argument("--metrics-grace", type=float, default=None, metavar="S",
                           help=f"seconds the last values stay scrapeable after the run (default {GRACE:g} if "
                                "something scraped the endpoint during it, else 0)")
        flags.add_argument("--pushgateway", metavar="URL", help="also push the final values to this "
                           "Pushgateway, grouped by sweep")
    flags.add_argument("--no-metrics", action="store_true", help="no Prometheus endpoint")
    return flags


def check_port(args: argparse.Namespace) -> None:
    """Before anything is written or started."""
    if not 0 <= args.metrics_port <= 65535:
        raise ConfigError("metrics-port", "a port from 0 (any free one) to 65535", args.metrics_port)
