"""A Ctrl-C held for a block of bookkeeping: raised when the block ends, or at once when repeated."""

from __future__ import annotations

import signal
import threading

import pytest

from orchestrator.interrupts import interrupts_held


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Python's own Ctrl-C handler: a suite started in the background (nohup, `make test &`) inherits SIGINT
    ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _ctrl_c() -> None:
    # to this thread, handled before the call returns: os.kill to the process may land on another thread and
    # reach Python's handler only after the test has moved on (a KeyboardInterrupt that ends the test session)
    signal.raise_signal(signal.SIGINT)


def test_a_ctrl_c_inside_the_block_lets_the_block_finish_then_interrupts():
    assert threading.current_thread() is threading.main_thread()  # where Python handles signals
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            _ctrl_c()
            done.append("after the signal")
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_ctrl_c_interrupts_the_block_at_once():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            _ctrl_c()
            _ctrl_c()
            done.append("after the second signal")
    assert done == []


def test_where_ctrl_c_is_ignored_it_stays_ignored_inside_the_block():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupts_held():
        _ctrl_c()
        _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_block_without_ctrl_c_runs_and_returns_as_usual():
    with interrupts_held():
        value = 1
    assert value == 1


def test_off_the_main_thread_the_block_runs_without_touching_the_handler():
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with interrupts_held():
                pass
        except BaseException as error:  # signal.signal raises ValueError off the main thread
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == []
