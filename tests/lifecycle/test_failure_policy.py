"""Pure restart decisions."""

from __future__ import annotations

from orchestrator.config.schema import FailureConfig
from orchestrator.lifecycle.failure_policy import Failure, FailureKind, classify_error, decide
from orchestrator.lifecycle.rank_reports import ErrorReport

DIED = Failure(FailureKind.WORKER_DIED, "rank 1 died", world_rank=1)
RAISED = Failure(FailureKind.USER_ERROR, "rank 0 raised ValueError", world_rank=0)


def test_restarts_until_the_budget_is_spent():
    policy = FailureConfig(max_restarts=2)
    assert decide(DIED, 0, policy).restart and decide(DIED, 1, policy).restart
    final = decide(DIED, 2, policy)
    assert not final.restart and final.reason == "gave up after 2 restarts (failure.max_restarts=2)"


def test_minus_one_means_no_limit_and_zero_means_never():
    assert decide(DIED, 1000, FailureConfig(max_restarts=-1)).restart
    assert not decide(DIED, 0, FailureConfig(max_restarts=0)).restart


def test_infra_only_does_not_retry_exceptions_but_retries_infrastructure():
    policy = FailureConfig(restart_on="infra_only")
    assert not decide(RAISED, 0, policy).restart
    assert decide(RAISED, 0, FailureConfig(restart_on="any")).restart
    for kind in (FailureKind.WORKER_DIED, FailureKind.HANG, FailureKind.LAUNCH):
        assert decide(Failure(kind, "x"), 0, policy).restart


def test_a_collective_broken_by_a_dead_peer_is_infrastructure_not_user_code():
    gloo = (
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
        "[127.0.0.1]:47245. This is typically caused by a remote worker crashing."
    )
    assert classify_error(_raised("RuntimeError", gloo)) is FailureKind.COMMUNICATION
    assert classify_error(_raised("DistBackendError", "anything")) is FailureKind.COMMUNICATION
    assert (
        classify_error(_raised("ValueError", "Expected input batch_size (32) to match target batch_size (16)"))
        is FailureKind.USER_ERROR
    )
    assert FailureKind.COMMUNICATION.is_infra


def _raised(error_type: str, message: str) -> ErrorReport:
    return ErrorReport(world_rank=0, node_ip="10.0.0.1", error_type=error_type, message=message, traceback="")


def _script_ended(exit_code: int, stderr_tail: str = "") -> ErrorReport:
    return ErrorReport(
        world_rank=0,
        node_ip="10.0.0.1",
        error_type="ScriptFailed",
        message=f"train.py exited with code {exit_code}",
        traceback=stderr_tail,
        exit_code=exit_code,
    )


def test_a_script_is_classified_by_how_its_process_ended():
    # killed by a signal (the OOM killer's SIGKILL, an abort): the machine, not the code
    assert classify_error(_script_ended(-9)) is FailureKind.WORKER_DIED
    assert classify_error(_script_ended(-6)) is FailureKind.WORKER_DIED
    # an error exit (argparse's usage error, an uncaught exception): the code, deterministically
    assert (
        classify_error(_script_ended(2, "usage: train.py [-h]\ntrain.py: error: bad --lr")) is FailureKind.SCRIPT_ERROR
    )
    assert classify_error(_script_ended(1, "ValueError: shapes differ")) is FailureKind.SCRIPT_ERROR
    # an error exit because a peer vanished mid-collective (its stderr says so): an echo, as for the built-in loop
    gloo_tail = "Traceback ...\nRuntimeError: [pair.cc:534] Connection closed by peer [10.0.0.2]:4312\n"
    assert classify_error(_script_ended(1, gloo_tail)) is FailureKind.COMMUNICATION
    assert not FailureKind.SCRIPT_ERROR.is_infra and FailureKind.WORKER_DIED.is_infra


def test_a_script_error_fails_at_once_unless_retries_are_asked_for():
    failed = Failure(FailureKind.SCRIPT_ERROR, "rank 0 raised ScriptFailed: train.py exited with code 2")
    decision = decide(failed, 0, FailureConfig(max_restarts=3))
    assert not decision.restart and "failure.retry_script_errors=true" in decision.reason
    assert decide(failed, 0, FailureConfig(max_restarts=3, retry_script_errors=True)).restart
    assert not decide(failed, 3, FailureConfig(max_restarts=3, retry_script_errors=True)).restart
    # infra_only still means what it says: errors of the code are not retried
    assert not decide(failed, 0, FailureConfig(restart_on="infra_only", retry_script_errors=True)).restart
    killed = Failure(FailureKind.WORKER_DIED, "rank 0 raised ScriptFailed: train.py was killed by SIGKILL (signal 9)")
    assert decide(killed, 0, FailureConfig(restart_on="infra_only")).restart


def test_the_restart_message_counts_what_is_left_after_this_restart():
    policy = FailureConfig(max_restarts=3)
    assert [decide(DIED, done, policy).reason for done in range(3)] == [
        "restart 1 (2 left)",
        "restart 2 (1 left)",
        "restart 3 (0 left)",
    ]


def test_errors_that_every_restart_repeats_are_never_retried():
    for error_type in ("CheckpointLoadError", "ModuleNotFoundError", "ImportError", "ConfigError", "SyntaxError"):
        kind = classify_error(_raised(error_type, "same every time"))
        assert kind is FailureKind.DETERMINISTIC and not kind.is_infra
        decision = decide(Failure(kind, "x"), 0, FailureConfig(max_restarts=-1))
        assert not decision.restart and decision.reason == "every restart would fail the same way: not restarted"
