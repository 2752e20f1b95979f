"""Pure restart decisions."""

from __future__ import annotations

from orchestrator.config.schema import FailureConfig
from orchestrator.policies import Failure, FailureKind, classify_error, decide

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
    gloo = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
            "[127.0.0.1]:47245. This is typically caused by a remote worker crashing.")
    assert classify_error("RuntimeError", gloo) is FailureKind.COMMUNICATION
    assert classify_error("DistBackendError", "anything") is FailureKind.COMMUNICATION
    assert classify_error("ValueError", "Expected input batch_size (32) to match target batch_size (16)") \
        is FailureKind.USER_ERROR
    assert FailureKind.COMMUNICATION.is_infra
