"""A Ray head for the warm-cluster runs: `ray start --head --block` with every port and its own --temp-dir.

This benchmark owns it: started here, reached only through its explicit address, and stopped by the
PID of the `ray start` process (which stops the processes it started); any process still running
with this head's session directory in its command line is then ended by its PID. Never `ray stop`, which ends
every Ray instance on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tests.helpers import free_ports  # the benchmark runs from a source checkout (its sys.path holds the root)

PORT_OPTIONS = (
    "--port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)
WORKER_PORTS = 16
STARTED_MARKER = "Ray runtime started"
STOP_TIMEOUT_S = 30.0


class RayHead:
    """One `ray start --head` process group of this benchmark's own."""

    def __init__(self, temp_dir: Path, num_cpus: int = 2):
        self.temp_dir = temp_dir
        self.num_cpus = num_cpus
        self.process: Optional[subprocess.Popen] = None
        self.address: Optional[str] = None

    def start(self) -> "RayHead":
        """Start the head and return once `ray start` says the runtime is up."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        ports = free_ports(len(PORT_OPTIONS) + WORKER_PORTS)
        options = [f"{option}={port}" for option, port in zip(PORT_OPTIONS, ports)]
        self.address = f"127.0.0.1:{ports[0]}"
        ray = str(Path(sys.executable).with_name("ray"))
        argv = [
            ray,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={self.num_cpus}",
            "--include-dashboard=false",
            *options,
            f"--worker-port-list={','.join(map(str, ports[len(PORT_OPTIONS) :]))}",
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in self.process.stdout:  # --block keeps it running; the marker says the head is up
            seen.append(line)
            if STARTED_MARKER in line:
                break
        else:
            raise RuntimeError("ray start --head failed:\n" + "".join(seen))
        return self

    def driver_env(self) -> dict[str, str]:
        """Environment a driver needs for this head: `ray start` turns token authentication on (Ray 2.5x+)."""
        return {"RAY_AUTH_MODE": "token"}

    def stop(self) -> None:
        """Stop `ray start` by its PID, then any process of this head that outlived it, by PID."""
        import psutil

        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.process = None
        # this head's processes name its session directory (or, for `ray start`, its temp dir) in their arguments
        markers = (f"{self.temp_dir}/session_", f"--temp-dir={self.temp_dir}")
        leftovers = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            arguments = " ".join(process.info["cmdline"] or [])
            if process.info["pid"] != os.getpid() and any(marker in arguments for marker in markers):
                leftovers.append(process)
                process.terminate()
        psutil.wait_procs(leftovers, timeout=STOP_TIMEOUT_S)
