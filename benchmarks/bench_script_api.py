"""What orchestrator.report() costs a script per call, against a loop that does nothing else.

Three situations, each timed over --calls calls after a warm-up:

  managed       under the orchestrator: rank 0 writes each report to the worker's pipe, which another
                process drains and parses into MetricsReports exactly as the worker does (orchestrator.worker.script)
  standalone    under torchrun or alone, rank 0: one line printed (to /dev/null here)
  other-rank    any rank but 0: validates the metrics and returns

    python benchmarks/bench_script_api.py --calls 100000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orchestrator  # noqa: E402
from orchestrator import api  # noqa: E402

METRICS = {"train/loss": 0.25, "train/accuracy": 0.875, "train/lr": 0.001}


def per_call_us(calls: int) -> float:
    started = time.perf_counter()
    for step in range(calls):
        orchestrator.report(METRICS, step)
    return (time.perf_counter() - started) / calls * 1e6


READER = """
import os, sys
from orchestrator.worker.script import Progress, _pump_reports
received = []
_pump_reports(int(sys.argv[1]), 0, received.append, Progress())
print(len(received))
"""


def managed(calls: int) -> tuple[float, int]:
    """Reports into a pipe drained by another process that parses them as the worker does."""
    read, write = os.pipe()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(read)],
        pass_fds=(read,),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    os.close(read)
    os.environ[api.REPORT_FD_VARIABLE] = str(write)
    try:
        per_call_us(1000)
        cost = per_call_us(calls)
        api._channel(str(write)).close()
    finally:
        os.close(write)
        del os.environ[api.REPORT_FD_VARIABLE]
        api._channel.cache_clear()
    received = int(reader.communicate(timeout=120)[0])
    return cost, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    for variable in ("RANK", api.REPORT_FD_VARIABLE):
        os.environ.pop(variable, None)
    cost, received = managed(args.calls)
    print(f"managed:    {cost:.2f} us per report ({received:,} of {args.calls + 1000:,} reached the worker side)")
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        per_call_us(1000)
        cost = per_call_us(args.calls)
    print(f"standalone: {cost:.2f} us per report (a printed line)")
    os.environ["RANK"] = "1"
    per_call_us(1000)
    print(f"other-rank: {per_call_us(args.calls):.2f} us per report")
    started = time.perf_counter()
    for step in range(args.calls):
        pass
    print(f"empty loop: {(time.perf_counter() - started) / args.calls * 1e6:.3f} us per iteration")


if __name__ == "__main__":
    main()
