"""`orchestrator submit`: run `orchestrator train` on a remote cluster through Ray Job Submission."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from launchers.cluster.connection import TOKEN_HOWTO
from orchestrator.config.schema import JobConfig
from orchestrator.errors import LaunchError
from orchestrator.kubernetes.rayjob import without_runtime_env

if TYPE_CHECKING:  # only a type here: Ray is imported when a job is submitted
    from ray.job_submission import JobSubmissionClient

# never uploaded with the working directory: environments, outputs and local run stores
WORKING_DIR_EXCLUDES = [
    ".venv",
    "venv",
    ".git",
    "build",
    "__pycache__",
    "outputs",
    "multirun",
    "mlruns",
    "mlartifacts",
    "checkpoints",
    "mlflow.db",
    "*.egg-info",
]
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 130}
AGENT_WAIT_S = 60.0
"""How long to keep retrying while the head's job agent is still starting."""


@dataclass(frozen=True)
class Submission:
    """What `submit` sends: the shell entrypoint and the job's runtime_env."""

    entrypoint: str
    runtime_env: dict[str, Any]


def build_submission(job: JobConfig, overrides: Sequence[str], working_dir: Path) -> Submission:
    """The entrypoint re-runs `orchestrator train` with the same overrides on the cluster itself.

    Inside a Ray job the driver must join the cluster it runs on (`cluster.address=auto`, which Ray's
    job supervisor resolves through RAY_ADDRESS); with the default null it would start its own Ray.
    cluster.runtime_env is sent as the job's runtime env (the driver's actors inherit it), not repeated
    on the command line, which the cluster's dashboard shows to everyone who can open it.
    """
    arguments = ["python", "-m", "orchestrator", "train", *without_runtime_env(overrides)]
    if not any(override.startswith("cluster.address=") for override in overrides):
        arguments.append("cluster.address=auto")
    runtime_env = dict(job.cluster.runtime_env)
    runtime_env.setdefault("working_dir", str(working_dir))
    runtime_env["excludes"] = list(runtime_env.get("excludes", [])) + WORKING_DIR_EXCLUDES
    return Submission(entrypoint=shlex.join(arguments), runtime_env=runtime_env)


def local_store_warning(job: JobConfig) -> str | None:
    """A warning when the run would be recorded in a file on the cluster instead of a tracking server."""
    if job.tracking.enabled and job.tracking.uri.startswith("sqlite:"):
        return (
            "warning: tracking.uri is a SQLite file, so the run is recorded in a file on the node that runs the "
            "job's driver (a relative path lands in the job's temporary working directory); set "
            "tracking.uri=http://<mlflow server>:5000 to keep it"
        )
    return None


def submit(address: str, submission: Submission, wait: bool, write: Callable[[str], None]) -> int:
    """Submit; with `wait`, stream the logs and return the exit code of the job's final status."""
    client = _client(address)
    submission_id = _submit_job(client, address, submission)
    if not wait:
        write(f"{submission_id}\n")
        return 0
    write(f"submitted {submission_id} to {address}; streaming its logs (Ctrl-C detaches, the job goes on)\n")
    try:
        asyncio.run(_stream_logs(client, submission_id, write))
    except KeyboardInterrupt:
        write(f"\ndetached; the job goes on. Stop it with: ray job stop --address {address} {submission_id}\n")
        return 130
    status = str(client.get_job_status(submission_id)).rsplit(".", 1)[-1]
    write(f"job {submission_id} {status}\n")
    return EXIT_CODES.get(status, 1)


def _client(address: str) -> JobSubmissionClient:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as error:  # connection refused, HTTP errors, missing or wrong token...
        text = str(error)
        hint = f" {TOKEN_HOWTO}" if "token" in text.lower() else " Check --address (http://HEAD:8265)."
        raise LaunchError(f"cannot submit to {address}: {text.strip()}.{hint}") from error


def _submit_job(
    client: JobSubmissionClient,
    address: str,
    submission: Submission,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """submit_job, retrying while a freshly started head has no job agent yet (a transient 500)."""
    deadline, delay = clock() + AGENT_WAIT_S, 0.5
    while True:
        try:
            return client.submit_job(entrypoint=submission.entrypoint, runtime_env=submission.runtime_env)
        except RuntimeError as error:
            if "No available agent" not in str(error) or clock() + delay > deadline:
                raise LaunchError(f"{address} refused the job: {str(error).strip()}") from error
        sleep(delay)  # the agent registers on its own; Ray offers nothing to wait on
        delay = min(delay * 2, 8.0)


async def _stream_logs(client: JobSubmissionClient, submission_id: str, write: Callable[[str], None]) -> None:
    async for chunk in client.tail_job_logs(submission_id):
        write(chunk)


def stdout_writer(text: str) -> None:
    """Write submission output straight through to the terminal."""
    sys.stdout.write(text)
    sys.stdout.flush()
