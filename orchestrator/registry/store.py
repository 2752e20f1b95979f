"""The registry in an MLflow store: register a run's logged model, read versions, move aliases, resolve references.

Every function takes an explicit MlflowClient (no fluent state); the choices they act on are made in
`promotion.py` and `model_ref.py`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from orchestrator.registry.errors import RegistryError
from orchestrator.registry.model_ref import ModelRef
from orchestrator.registry.promotion import VersionMetrics
from orchestrator.registry.version_tags import tag_metrics, version_tags

MODEL_NAME = "model"
"""The name the run recorder logs the trained model under (tracking/model_log.py)."""
CONFIG_ARTIFACT = "config.yaml"
"""The run's resolved config (tracking/run_recorder.py writes it): its digest goes into the version's tags."""
SHOWN_NAMES = 15


@dataclass(frozen=True)
class RegisteredVersion:
    """A version made by `register_run_model`, with the alias moved to it (None: no alias)."""

    name: str
    version: int
    alias: Optional[str]
    run_id: str


@dataclass(frozen=True)
class ResolvedModel:
    """The logged model behind a reference: its run, a URI MLflow loads, and the version (None for a run id)."""

    ref: ModelRef
    run_id: str
    model_uri: str
    """models:/NAME/VERSION or models:/<logged model id>: what a process with this store as its tracking URI loads."""
    version: Optional[int]
    artifact_uri: str
    """Where the model's files are: MLflow resolves models:/ URIs through the process-wide tracking URI only."""


def logged_model_id(client: Any, run_id: str) -> str:
    """The id of the model the run logged under the name `model` (the newest, if it logged several)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise RegistryError(f"no run with id {run_id!r} in this tracking store") from None
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    named = sorted((model for model in models if model.name == MODEL_NAME), key=lambda model: model.creation_timestamp)
    if not named:
        raise RegistryError(
            f"run {run_id} has no logged model named {MODEL_NAME!r}: only finished runs with "
            f"tracking.log_model=true (and inputs the model's signature can be taken from) log one"
        )
    return str(named[-1].model_id)


def register_run_model(client: Any, run_id: str, name: str, alias: Optional[str]) -> RegisteredVersion:
    """Make the run's logged model a new version of `name` (created when missing), tagged with the run id,
    its eval/ metrics and its config's digest; then point `alias` at it."""
    from mlflow.exceptions import MlflowException

    model_id = logged_model_id(client, run_id)
    run = client.get_run(run_id)
    tags = version_tags(run_id, dict(run.data.metrics), _config_text(client, run_id))
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # the logged model's artifact location, not models:/<id>: MLflow's SQL registry resolves a models:/ source
    # through the process-wide tracking URI, which need not be this client's store
    location = client.get_logged_model(model_id).artifact_location
    created = client.create_model_version(name, source=location, run_id=run_id, tags=tags, model_id=model_id)
    version = int(created.version)
    if alias is not None:
        client.set_registered_model_alias(name, alias, str(version))
    return RegisteredVersion(name=name, version=version, alias=alias, run_id=run_id)


def _config_text(client: Any, run_id: str) -> Optional[str]:
    """The run's config.yaml artifact as logged, or None when it has none."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="orchestrator-config-") as folder:
        try:
            with no_progress_bar():
                path = client.download_artifacts(run_id, CONFIG_ARTIFACT, folder)
        except (MlflowException, OSError):
            return None
        return Path(path).read_text()


def version_metrics(client: Any, name: str) -> list[VersionMetrics]:
    """Every version of `name` with its metrics: the run's final values, overridden by the version's eval/ tags."""
    from mlflow.exceptions import MlflowException

    require_model(client, name)
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{_quoted(name)}'", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    found = []
    for version in versions:
        metrics: dict[str, float] = {}
        if version.run_id:
            try:
                metrics.update(client.get_run(version.run_id).data.metrics)
            except MlflowException:
                pass  # the run was deleted: the version's tags still hold its metrics
        metrics.update(tag_metrics(version.tags))
        found.append(VersionMetrics(version=int(version.version), run_id=version.run_id, metrics=metrics))
    return found


def require_model(client: Any, name: str) -> None:
    """Raise a RegistryError naming the registered models there are when `name` is not one of them."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        names = sorted(model.name for model in client.search_registered_models())
        shown = ", ".join(names[:SHOWN_NAMES]) or "none"
        raise RegistryError(
            f"registered model {name!r} does not exist; registered models: {shown} "
            f"(register one with tracking.register_as=NAME)"
        ) from None


def alias_version(client: Any, name: str, alias: str) -> Optional[int]:
    """The version `alias` points at, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def move_alias(client: Any, name: str, alias: str, version: int) -> None:
    """Point `alias` of `name` at `version` (MLflow moves it off the version it was on)."""
    client.set_registered_model_alias(name, alias, str(version))


def resolve(client: Any, ref: ModelRef) -> ResolvedModel:
    """The run and loadable URI behind a reference; errors name what is unknown."""
    from mlflow.exceptions import MlflowException

    if ref.run_id is not None:
        model_id = logged_model_id(client, ref.run_id)
        location = client.get_logged_model(model_id).artifact_location
        return ResolvedModel(
            ref=ref, run_id=ref.run_id, model_uri=f"models:/{model_id}", version=None, artifact_uri=location
        )
    assert ref.name is not None  # parse_model_ref: a reference without a run id has a name
    require_model(client, ref.name)
    try:
        if ref.alias is not None:
            found = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            found = client.get_model_version(ref.name, str(ref.version))
    except MlflowException:
        versions = sorted(
            int(version.version) for version in client.search_model_versions(f"name = '{_quoted(ref.name)}'")
        )
        aliases = sorted(client.get_registered_model(ref.name).aliases)
        raise RegistryError(
            f"{ref} does not exist; versions of {ref.name!r}: {', '.join(map(str, versions)) or 'none'}; "
            f"aliases: {', '.join(aliases) or 'none'}"
        ) from None
    if not found.run_id:
        raise RegistryError(f"{ref} (version {found.version}) has no source run to check the export against")
    return ResolvedModel(
        ref=ref,
        run_id=found.run_id,
        model_uri=f"models:/{ref.name}/{found.version}",
        version=int(found.version),
        artifact_uri=client.get_model_version_download_uri(ref.name, found.version),
    )


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


PROGRESS_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def no_progress_bar() -> Iterator[None]:
    """MLflow's download progress bar off for the block (it reads the variable per call); restored after."""
    previous = os.environ.get(PROGRESS_VARIABLE)
    os.environ[PROGRESS_VARIABLE] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[PROGRESS_VARIABLE]
        else:
            os.environ[PROGRESS_VARIABLE] = previous
