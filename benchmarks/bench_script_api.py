"""What orchestrator.report() costs a script per call, against a loop that does nothing else.

Three situations, each timed over --calls calls after a warm-up:

  managed       under the orchestrator: rank 0 writes each report to the worker's pipe, which a thread
                drains and parses into MetricsReports exactly as the worker does (orchestrator.worker.script)
  standalone    under torchrun or alone, rank 0: one line printed (to /dev/null here)
  other-rank    any rank but 0: validates the metrics and returns

    python benchmarks/bench_script_api.py --calls 100000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orchestrator  # noqa: E402
from orchestrator import api  # noqa: E402
from orchestrator.worker.script import Progress, _pump_reports  # noqa: E402

METRICS = {"train/loss": 0.25, "train/accuracy": 0.875, "train/lr": 0.001}


def per_call_us(calls: int) -> float:
    started = time.perf_counter()
    for step in range(calls):
        orchestrator.report(METRICS, step)
    return (time.perf_counter() - started) / calls * 1e6


def managed(calls: int) -> tuple[float, int]:
    read, write = os.pipe()
    received: list = []
    reader = threading.Thread(target=_pump_reports, args=(read, 0, received.append, Progress()))
    reader.start()
    os.environ[api.REPORT_FD_VARIABLE] = str(write)
    try:
        per_call_us(1000)
        cost = per_call_us(calls)
        api._channel(str(write)).close()
    finally:
        os.close(write)
        reader.join()
        del os.environ[api.REPORT_FD_VARIABLE]
        api._channel.cache_clear()
    return cost, len(received)


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
