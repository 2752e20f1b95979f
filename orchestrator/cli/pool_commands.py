"""`orchestrator pool up|status|down`: a warm pool of rank processes on a running Ray cluster (cluster.pool=NAME)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

USAGE = """orchestrator pool up --workers N [--name NAME] [--address ADDR] [--cpus-per-worker C]
                      [--gpus-per-worker G] [--resource NAME=AMOUNT ...] [--strategy S] [--timeout SECONDS]
orchestrator pool status [--name NAME] [--address ADDR]
orchestrator pool down [--name NAME] [--address ADDR]"""

DESCRIPTION = """A warm pool: N rank processes started on a running Ray cluster, torch and the training loop loaded,
each holding one worker's resources. A job with cluster.pool=NAME (and cluster.address of that cluster)
leases its ranks there instead of starting its own and gives them back, reset, at its end. The pool lives
until `pool down` or the cluster's end. Its workers' resources must be a job's resources per worker
(scaling.cpus_per_worker, scaling.gpus_per_worker, scaling.resources_per_worker)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator pool", usage=USAGE, description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="up|status|down")
    for name, summary in (
        ("up", "start a pool"),
        ("status", "show a pool's workers"),
        ("down", "remove a pool and its workers"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("--name", default="default", help="the pool's name (cluster.pool); default: default")
        command.add_argument(
            "--address",
            default=os.environ.get("RAY_ADDRESS"),
            help="the Ray cluster (HOST:6379, ray://HOST:10001); default: $RAY_ADDRESS",
        )
        if name == "up":
            command.add_argument("--workers", type=int, required=True, help="rank processes to keep")
            command.add_argument("--cpus-per-worker", type=float, default=1.0)
            command.add_argument("--gpus-per-worker", type=float, default=0.0)
            command.add_argument(
                "--resource", action="append", default=[], metavar="NAME=AMOUNT", help="a custom resource per worker"
            )
            command.add_argument(
                "--strategy", default="PACK", choices=["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
            )
            command.add_argument(
                "--timeout", type=float, default=60.0, help="seconds to wait for the pool's resources (default 60)"
            )
    return parser


def pool_main(argv: Sequence[str]) -> int:
    """Run a `pool` subcommand; 0 on success, 1 when the cluster cannot do it, 2 for bad arguments."""
    args = _parser().parse_args(list(argv))
    problems = _problems(args)
    if problems:
        for problem in problems:
            print(f"orchestrator pool: {problem}", file=sys.stderr)
        return 2
    import ray

    from launchers.pool.pool_client import pool_down, pool_status, pool_taken_back, pool_up
    from orchestrator.errors import LaunchError

    connected = ray.is_initialized()  # in-process callers (tests, a notebook) keep their connection
    if not connected:
        ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if args.command == "up":
            workers = pool_up(args.name, args.workers, _bundle(args), args.strategy, args.timeout)
            print(
                f"pool {args.name}: {len(workers)} workers up on {args.address}; jobs lease them with "
                f"cluster.pool={args.name} cluster.address={args.address}"
            )
            _print(workers)
        elif args.command == "status":
            _print(pool_status(args.name))
            for job in pool_taken_back(args.name):
                print(f"taken back from {job}: its driver ended without giving the workers back")
        else:
            print(f"pool {args.name}: down, {pool_down(args.name)} workers ended")
        return 0
    except LaunchError as error:
        print(f"orchestrator pool {args.command}: {error}", file=sys.stderr)
        return 1
    finally:
        if not connected:
            ray.shutdown()


def _problems(args: argparse.Namespace) -> list[str]:
    import re

    found = []
    if not args.address:
        found.append("--address is required (or RAY_ADDRESS): the running cluster the pool lives on")
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", args.name):
        found.append(f"--name={args.name!r} is not valid: letters, digits, '-' and '_'")
    if args.command == "up":
        if args.workers < 1:
            found.append(f"--workers={args.workers} is not valid: must be at least 1")
        if args.cpus_per_worker <= 0:
            found.append(f"--cpus-per-worker={args.cpus_per_worker:g} is not valid: must be > 0")
        if args.gpus_per_worker < 0:
            found.append(f"--gpus-per-worker={args.gpus_per_worker:g} is not valid: must be >= 0")
        for item in args.resource:
            name, _, amount = item.partition("=")
            try:
                ok = bool(name) and float(amount) > 0
            except ValueError:
                ok = False
            if not ok:
                found.append(f"--resource {item!r} is not valid: NAME=AMOUNT with AMOUNT > 0")
        if args.timeout <= 0:
            found.append(f"--timeout={args.timeout:g} is not valid: must be > 0")
    return found


def _bundle(args: Any) -> dict[str, float]:
    """One worker's resources, as a job's plan asks for them (orchestrator.planning.plan.worker_resources)."""
    bundle = {"CPU": float(args.cpus_per_worker)}
    if args.gpus_per_worker > 0:
        bundle["GPU"] = float(args.gpus_per_worker)
    for item in args.resource:
        name, _, amount = item.partition("=")
        bundle[name] = float(amount)
    return bundle


def _print(workers: Sequence[Any]) -> None:
    print(f"{'bundle':<7} {'node':<16} {'pid':<8} held by")
    for worker in workers:
        print(f"{worker.bundle_index:<7} {worker.node_ip:<16} {worker.pid or '-':<8} {worker.leased_by or 'free'}")
