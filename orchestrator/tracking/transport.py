"""How metric batches reach the store, and the check that a tracking server is there before a job starts.

Against a server, batches go straight to MLflow's REST endpoint with our own timeout and no retries
inside the request: MlflowClient retries a refused connection for minutes, which would hold the
writer hostage; the writer's own backoff and `tracking.max_outage_s` decide instead. Credentials come
from the environment (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN),
the way MLflow itself reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from orchestrator.errors import OrchestratorError
from orchestrator.redaction import redact_value
from orchestrator.tracking.metric_writer import MetricValue, Send
from orchestrator.tracking.store_guard import StoreGuard

if TYPE_CHECKING:  # only a type here: MLflow is imported where it is used
    from mlflow.entities import Metric

LOG_BATCH_ENDPOINT = "/api/2.0/mlflow/runs/log-batch"
GET_EXPERIMENT_ENDPOINT = "/api/2.0/mlflow/experiments/get-by-name"
CHECK_TIMEOUT_S = 5.0
CREDENTIALS_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the "
    "environment; credentials never go into the config"
)


class TrackingUnavailable(OrchestratorError, ValueError):
    """The configured tracking server cannot be used; raised before the job takes any resource."""

    exit_code = 2


def is_server(tracking_uri: str) -> bool:
    """True for an MLflow tracking server (http or https)."""
    return tracking_uri.startswith(("http://", "https://"))


def http_sender(tracking_uri: str, run_id: str) -> Send:
    """Send batches to a tracking server's log-batch endpoint, one attempt each."""
    from mlflow.protos.service_pb2 import LogBatch
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.proto_json_utils import message_to_json
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    def send(values: Sequence[MetricValue], timeout_s: float) -> None:
        body = message_to_json(LogBatch(run_id=run_id, metrics=[_metric(value).to_proto() for value in values]))
        response = http_request(
            get_default_host_creds(tracking_uri),
            LOG_BATCH_ENDPOINT,
            "POST",
            max_retries=0,
            backoff_factor=0,
            timeout=timeout_s,
            data=body,
            extra_headers={"Content-Type": "application/json"},
        )
        verify_rest_response(response, LOG_BATCH_ENDPOINT)

    return send


def store_sender(client: Any, run_id: str, guard: StoreGuard) -> Send:
    """Send batches through MlflowClient (SQLite, PostgreSQL), holding the store's write lock."""

    def send(values: Sequence[MetricValue], timeout_s: float) -> None:
        metrics = [_metric(value) for value in values]
        guard.attempt(lambda: client.log_batch(run_id, metrics=metrics))

    return send


def _metric(value: MetricValue) -> Metric:
    from mlflow.entities import Metric

    return Metric(value.key, value.value, value.timestamp_ms, value.step)


def server_answers(tracking_uri: str) -> bool:
    """One quick look (no retries) whether the tracking server answers its health check."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(
            get_default_host_creds(tracking_uri),
            "/health",
            "GET",
            max_retries=0,
            backoff_factor=0,
            timeout=CHECK_TIMEOUT_S,
        )
    except Exception:  # any failure to get an answer means: not now
        return False
    return response.status_code == 200


def check_server(tracking_uri: str, experiment: str, setting: str = "tracking.uri") -> None:
    """Fail fast, naming the fix, when a tracking server is unreachable or refuses our credentials.

    `setting` is what the user set the URI with, for the message (a config key or a command option).
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    shown = redact_value(tracking_uri)
    try:
        response = http_request(
            get_default_host_creds(tracking_uri),
            GET_EXPERIMENT_ENDPOINT,
            "GET",
            max_retries=0,
            backoff_factor=0,
            timeout=CHECK_TIMEOUT_S,
            params={"experiment_name": experiment},
        )
    except Exception as error:
        raise TrackingUnavailable(
            f"the MLflow tracking server at {setting}={shown} is not reachable ({type(error).__name__}): "
            f"start one with `orchestrator mlflow-server` (or `make mlflow`), or set {setting} to a running "
            f"server or to sqlite:///mlflow.db"
        ) from None
    if response.status_code in (401, 403):
        raise TrackingUnavailable(
            f"the MLflow tracking server at {setting}={shown} refused the login "
            f"(HTTP {response.status_code}): {CREDENTIALS_HINT}"
        )
    if response.status_code >= 500:
        raise TrackingUnavailable(
            f"the MLflow tracking server at {setting}={shown} answered HTTP "
            f"{response.status_code}: {response.text[:200]}"
        )
