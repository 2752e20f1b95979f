"""Two hosts made of network namespaces joined by a veth pair: DDP over gloo across the link.

A Ray head runs in namespace A, a worker node in namespace B, each bound to its namespace's
address; the driver runs in A. Each namespace has its own loopback, so a gloo that resolved the
hostname to 127.0.0.1 would hang: the job only trains if each rank pins gloo to the interface that
holds its Ray node IP. Everything started here is stopped by PID and the namespaces are deleted,
whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers import wait_until

VENV_BIN = Path(sys.executable).parent
SUBNET = "10.231.{}.{}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _namespaces_allowed(probe: str) -> str | None:
    """None when this machine lets us create network namespaces, else the reason it does not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class TwoHosts:
    """Namespaces A and B on one /24 over a veth pair; owns every process it starts in them."""

    def __init__(self, tag: str, auth: dict[str, str]):
        self.auth = auth
        self.names = (f"orchA{tag}", f"orchB{tag}")
        self.veths = (f"oa{tag}", f"ob{tag}")
        subnet = int(tag) % 200 + 20
        self.ips = (SUBNET.format(subnet, 1), SUBNET.format(subnet, 2))
        self.temp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))  # short: Ray's socket paths are length-limited
        self.processes: list[subprocess.Popen] = []

    def create(self) -> None:
        for name in self.names:
            _ip("netns", "add", name)
        _ip("link", "add", self.veths[0], "type", "veth", "peer", "name", self.veths[1])
        for name, veth, address in zip(self.names, self.veths, self.ips):
            _ip("link", "set", veth, "netns", name)
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", veth)
            _ip("-n", name, "link", "set", veth, "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def run(self, host: int, *command: str, **popen) -> subprocess.Popen:
        """Start `command` inside host 0 (A) or 1 (B)."""
        process = subprocess.Popen(["ip", "netns", "exec", self.names[host], *command], **popen)
        self.processes.append(process)
        return process

    def start_ray(self) -> None:
        log_a, log_b = self.temp / "head.log", self.temp / "worker.log"
        common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
        self.run(
            0,
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            f"--node-ip-address={self.ips[0]}",
            "--port=6379",
            "--include-dashboard=false",
            f"--temp-dir={self.temp / 'a'}",
            *common,
            stdout=log_a.open("w"),
            stderr=subprocess.STDOUT,
            env=ray_env(self.auth),
        )
        wait_until(lambda: "Ray runtime started" in log_a.read_text(), 90, f"the head in {self.names[0]}")
        self.run(
            1,
            str(VENV_BIN / "ray"),
            "start",
            f"--address={self.ips[0]}:6379",
            f"--node-ip-address={self.ips[1]}",
            f"--temp-dir={self.temp / 'b'}",
            *common,
            stdout=log_b.open("w"),
            stderr=subprocess.STDOUT,
            env=ray_env(self.auth),
        )
        wait_until(lambda: "Ray runtime started" in log_b.read_text(), 90, f"the worker node in {self.names[1]}")

    def destroy(self) -> None:
        """Stop our processes by PID, then whatever still runs in the namespaces, then the namespaces."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # `ray start --block` stops the Ray processes it started
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for name in self.names:
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                _kill(int(pid))
            _ip("netns", "del", name, check=False)
        shutil.rmtree(self.temp, ignore_errors=True)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def ray_env(auth: dict[str, str]) -> dict[str, str]:
    """`ray start --head` turns on token authentication: drivers and joining nodes send the token."""
    env = {**os.environ, **auth, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def two_hosts(ray_token_env):
    tag = str(os.getpid() % 10000)
    reason = _namespaces_allowed(f"orchprobe{tag}")
    if reason is not None:  # a container without CAP_NET_ADMIN, a laptop without root
        pytest.skip(
            f"two hosts are simulated with two network namespaces, which needs root and iproute2's `ip`; here {reason}"
        )
    hosts = TwoHosts(tag, ray_token_env)
    try:
        hosts.create()
        hosts.start_ray()
        yield hosts
    finally:
        hosts.destroy()


def test_ddp_over_gloo_across_two_hosts(two_hosts, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    driver = two_hosts.run(
        0,
        sys.executable,
        "-m",
        "orchestrator",
        "train",
        f"cluster.address={two_hosts.ips[0]}:6379",
        "scaling.num_workers=2",
        "scaling.placement_strategy=STRICT_SPREAD",
        "model=mlp",
        "trainer.max_steps=20",
        "tracking.log_model=false",
        f"tracking.uri={store}",
        "scaling.rendezvous_timeout_s=60",
        cwd=tmp_path,
        env=ray_env(two_hosts.auth),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("orchestrator").experiment_id])
    workers = json.loads(Path(client.download_artifacts(run.info.run_id, "workers.json", str(tmp_path))).read_text())
    assert sorted(worker["node_ip"] for worker in workers) == sorted(two_hosts.ips)
    assert workers[0]["params_digest"] == workers[1]["params_digest"] is not None
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [10, 20]
