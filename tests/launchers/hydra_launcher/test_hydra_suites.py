"""hydra/launcher=ray for any Hydra app, against the launcher test suites Hydra ships for its plugins.

The in-process suites run the sweeps in this process on the session's Ray connection; the integration
suite runs generated apps (`python task.py -m hydra/launcher=ray ...`) as subprocesses that connect to
the session's cluster with hydra.launcher.address.
"""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite


@pytest.fixture(autouse=True)
def hydras_default_version_base():
    """The suites expect Hydra's default version_base (its 1.1 behaviour: jobs change directory); the
    orchestrator's own compositions earlier in the session set 1.3 in Hydra's process-wide singleton."""
    from hydra.version import _UNSPECIFIED_, VersionBase

    saved = VersionBase.instance().getbase()
    VersionBase.instance().version_base = _UNSPECIFIED_
    yield
    VersionBase.instance().version_base = saved  # the instance hydra_restore_singletons put back


@pytest.fixture
def launcher_name(ray_cluster) -> str:
    return "ray"


@pytest.fixture
def overrides() -> list[str]:
    return []  # a new list per test: the suites extend it


@pytest.fixture
def task_launcher_cfg() -> dict:
    return {}


@pytest.fixture
def extra_flags(ray_cluster) -> list[str]:
    return ["-m", "hydra/launcher=ray", f"hydra.launcher.address={ray_cluster.address}"]


class TestRayLauncher(LauncherTestSuite):
    pass


class TestRayLauncherBatches(BatchedSweeperTestSuite):
    @pytest.fixture
    def overrides(self) -> list[str]:
        return ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=2"]


class TestRayLauncherIntegration(IntegrationTestSuite):
    pass


APP = """
import os

import hydra

import helper


@hydra.main(version_base=None, config_path=None)
def main(cfg):
    helper.record(os.getpid(), cfg.x)
    return cfg.x * 2


if __name__ == "__main__":
    main()
"""

HELPER = """
import json
import os


def record(pid, x):
    with open(os.path.join(os.environ["RECORDS"], f"{x}.json"), "w") as handle:
        json.dump({"pid": pid, "x": x, "cwd": os.getcwd()}, handle)
"""


def _app(tmp_path):
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "my_app.py").write_text(APP)
    (folder / "helper.py").write_text(HELPER)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    records = tmp_path / "records"
    records.mkdir()
    return folder / "my_app.py", elsewhere, records


def test_a_users_own_app_runs_each_job_in_a_process_of_its_own_importing_its_own_modules(ray_cluster, tmp_path):
    import json
    import os
    import subprocess
    import sys

    app, elsewhere, records = _app(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            "hydra/launcher=ray",
            f"hydra.launcher.address={ray_cluster.address}",
            "hydra.launcher.cpus_per_job=0.5",
            "hydra.launcher.max_concurrent=2",
            "+x=1,2,3",
            "hydra.job.env_copy=[RECORDS]",
        ],  # the driver's variable, as Hydra's other launchers
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RECORDS": str(records)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = [json.loads((records / f"{x}.json").read_text()) for x in (1, 2, 3)]
    assert len({entry["pid"] for entry in seen}) == 3 and os.getpid() not in {entry["pid"] for entry in seen}
    assert all(entry["cwd"] == str(elsewhere) for entry in seen)  # relative outputs land where they would locally
    assert sorted(path.name for path in (elsewhere / "multirun").glob("*/*/*")) == ["0", "1", "2", "multirun.yaml"]


def test_bad_launcher_settings_exit_2_naming_them_before_ray_starts(tmp_path):
    import os
    import subprocess
    import sys

    app, elsewhere, records = _app(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            "hydra/launcher=ray",
            "hydra.launcher.cpus_per_job=-1",
            "hydra.launcher.max_concurrent=0",
            "+x=1,2",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RECORDS": str(records)},
    )
    assert done.returncode == 2
    assert "hydra.launcher.cpus_per_job=-1 is not valid: must be a number >= 0" in done.stderr
    assert "hydra.launcher.max_concurrent=0 is not valid" in done.stderr
    assert "Traceback" not in done.stderr and not list(records.iterdir())
