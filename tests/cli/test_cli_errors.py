"""One error style on every command: Hydra's own composition errors exit 2 in our words, before Ray."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli.commands import main
from orchestrator.config import schema

FINDINGS = [
    (
        "scaling.num_worker=2",
        "scaling.num_worker=2 is not valid: scaling has no key num_worker (did you mean "
        "num_workers?); its keys: num_workers, cpus_per_worker",
    ),
    (
        "+scaling.num_worker=2",
        "+scaling.num_worker is not valid: scaling has no key num_worker (did you mean num_workers?)",
    ),
    ("scaling.num_workers=two", "scaling.num_workers=two is not valid: must be an integer"),
    ("model=resnet", "model=resnet is not valid: use one of cnn, gpt, mlp, target"),
    ("model=mpl", "model=mpl is not valid: use one of cnn, gpt, mlp, target (did you mean mlp?)"),
]
COMMANDS = [["train"], ["train", "-m"], ["plan"], ["k8s"], ["submit", "--address", "http://127.0.0.1:1"]]


@pytest.fixture
def no_ray(monkeypatch, tmp_path):
    """Fails the test if anything connects to Ray; the working directory is the test's own."""
    import launchers.cluster.connection

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for a rejected config")

    monkeypatch.setattr(launchers.cluster.connection, "connect", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("override, message", FINDINGS)
def test_hydras_errors_exit_2_naming_the_key_on_every_command(no_ray, capsys, command, override, message):
    assert main([*command, override]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and "To append to your config use" not in err and "HYDRA_FULL_ERROR" not in err
    assert not (no_ray / "outputs").exists() and not (no_ray / "multirun").exists()


def test_a_bad_value_of_a_later_swept_trial_is_refused_before_the_sweep_starts(no_ray, capsys):
    assert main(["train", "-m", "scaling.num_workers=2,two", "optim.lr=0.1,-1"]) == 2
    err = capsys.readouterr().err
    assert "scaling.num_workers=two is not valid: must be an integer" in err
    assert "optim.lr=-1.0 is not valid: must be a number > 0" in err
    assert not (no_ray / "multirun").exists()


def test_no_command_prints_the_usage_and_exits_2_and_version_works(capsys):
    assert main([]) == 2
    assert "usage: orchestrator <command>" in capsys.readouterr().err
    from orchestrator import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out == f"orchestrator {__version__}\n"


def _typed_keys() -> list[tuple[str, type]]:
    """Every scalar key of the default job's schema with its type (int, float, bool or str)."""
    found: list[tuple[str, type]] = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            arguments = [a for a in typing.get_args(kind) if a is not type(None)]
            if typing.get_origin(kind) is typing.Union and len(arguments) == 1:
                kind = arguments[0]
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{field.name}.")
            elif kind in (int, float, bool, str):
                found.append((f"{prefix}{field.name}", kind))

    walk(schema.JobConfig, "")
    return found


KEYS = _typed_keys()
NUMERIC = [(key, kind) for key, kind in KEYS if kind in (int, float, bool)]
NOT_A_VALUE = st.text(alphabet="qxzjkw", min_size=3, max_size=8)  # no number, bool or null reads like this


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from([key for key, _ in KEYS]), suffix=NOT_A_VALUE, value=st.integers(0, 9))
def test_any_unknown_key_exits_2_naming_it(no_ray, capsys, key, suffix, value):
    unknown = f"{key}{suffix}"
    assert main(["train", f"{unknown}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"{unknown}={value} is not valid: " in err and "Traceback" not in err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key_kind=st.sampled_from(NUMERIC), value=NOT_A_VALUE)
def test_any_value_of_the_wrong_type_exits_2_naming_the_key(no_ray, capsys, key_kind, value):
    key, kind = key_kind
    assert main(["train", f"{key}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"{key}={value} is not valid: must be " in err and "Traceback" not in err
