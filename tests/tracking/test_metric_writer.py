"""The metric writer with scripted stores: batching, back-pressure, outages, drops and a bounded close."""

from __future__ import annotations

import threading

import pytest

from orchestrator.tracking.metric_writer import BATCH_LIMIT, MetricValue, MetricWriter


def values(key: str, steps) -> list[MetricValue]:
    return [MetricValue(key, float(step), 1000 + step, step) for step in steps]


class ScriptedStore:
    """Records delivered batches; can hold a send until released, or fail while `down` is set."""

    def __init__(self):
        self.batches: list[list[MetricValue]] = []
        self.timeouts: list[float] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.down = threading.Event()
        self.failures = 0

    def send(self, batch, timeout_s):
        self.timeouts.append(timeout_s)
        self.entered.set()
        self.release.wait()
        if self.down.is_set():
            self.failures += 1
            raise ConnectionRefusedError("connection refused")
        self.batches.append(list(batch))

    @property
    def delivered(self) -> list[MetricValue]:
        return [value for batch in self.batches for value in batch]


def writer_for(store: ScriptedStore, **options) -> MetricWriter:
    options.setdefault("max_outage_s", 60.0)
    options.setdefault("first_retry_s", 0.01)
    options.setdefault("max_retry_s", 0.05)
    return MetricWriter(store.send, is_transient=lambda error: isinstance(error, OSError), **options).start()


def test_values_arrive_in_order_in_few_large_batches():
    store = ScriptedStore()
    store.release.clear()
    writer = writer_for(store)
    writer.put(values("train/loss", range(1)))
    assert store.entered.wait(5)  # the first send is in flight and held: everything else piles up behind it
    expected = values("train/loss", range(1))
    for start in range(1, 2501, 10):
        chunk = values("train/loss", range(start, start + 10))
        writer.put(chunk)
        expected += chunk
    store.release.set()
    assert writer.flush(10)
    report = writer.close(5)
    assert store.delivered == expected
    assert [len(batch) for batch in store.batches] == [1, BATCH_LIMIT, BATCH_LIMIT, 500]
    assert report.written == 2501 and report.dropped.total == 0 and report.reachable


def test_put_does_not_wait_for_a_slow_store_until_the_buffer_is_full():
    store = ScriptedStore()
    store.release.clear()
    writer = writer_for(store, buffer_limit=10)
    writer.put(values("a", [0]))
    assert store.entered.wait(5)
    writer.put(values("a", range(1, 11)))  # returns although the store has not answered: 10 buffered
    blocked = threading.Thread(target=writer.put, args=(values("a", [11]),), name="test-put")
    blocked.start()
    blocked.join(timeout=0.5)
    assert blocked.is_alive(), "a put into a full buffer should wait for the writer (back-pressure)"
    store.release.set()
    blocked.join(timeout=5)
    assert not blocked.is_alive()
    assert writer.flush(5)
    writer.close(5)
    assert [value.step for value in store.delivered] == list(range(12))


def test_an_outage_loses_nothing_and_the_console_hears_about_it():
    store = ScriptedStore()
    store.down.set()
    writer = writer_for(store)
    writer.put(values("train/loss", range(0, 50)))
    for _ in range(200):  # the writer keeps retrying with backoff; nothing is resolved meanwhile
        if store.failures >= 3:
            break
        assert not writer.flush(0.05)
    assert store.failures >= 3
    writer.put(values("train/loss", range(50, 100)))
    store.down.clear()
    assert writer.flush(10)
    report = writer.close(5)
    assert [value.step for value in store.delivered] == list(range(100))
    assert report.dropped.total == 0 and report.reachable
    notices = writer.notices()
    assert "cannot write metrics (ConnectionRefusedError: connection refused)" in notices[0]
    assert "retrying for up to 60 s" in notices[0]
    assert notices[-1].startswith("MLflow: reachable again after") and "no metric value was lost" in notices[-1]


def test_values_older_than_max_outage_are_dropped_and_reported_and_training_goes_on():
    store = ScriptedStore()
    store.down.set()
    writer = writer_for(store, max_outage_s=0.2)
    writer.put(values("train/loss", range(10, 40, 10)) + values("eval/accuracy", [30]))
    assert writer.flush(10)  # resolved by dropping them once they waited 0.2 s
    store.down.clear()
    writer.put(values("train/loss", [40]))
    assert writer.flush(10)
    report = writer.close(5)
    assert [(value.key, value.step) for value in store.delivered] == [("train/loss", 40)]
    assert report.dropped.total == 4
    assert report.dropped.describe() == "eval/accuracy: 1 value, step 30; train/loss: 3 values, steps 10-30"
    notices = writer.notices()
    assert any("still unreachable after 0.2 s" in notice and "training goes on" in notice for notice in notices)
    assert "4 metric values were dropped (eval/accuracy: 1 value, step 30; train/loss: 3 values" in notices[-1]


def test_close_is_bounded_when_the_store_hangs_and_drops_what_is_left():
    store = ScriptedStore()

    def hang(batch, timeout_s):  # a server that accepts the connection and never answers
        store.timeouts.append(timeout_s)
        store.release.wait(timeout_s)
        raise TimeoutError("read timed out")

    store.release.clear()
    store.send = hang
    writer = writer_for(store)
    writer.put(values("train/loss", range(5)))
    report = writer.close(0.3)
    assert not writer._thread.is_alive()
    assert report.dropped.total == 5 and report.written == 0 and not report.reachable
    assert max(store.timeouts) <= 0.3 + 1e-6
    writer.put(values("train/loss", [5]))  # after close nothing is written any more, and it is counted
    assert writer.close(0.1).dropped.total == 6


def test_a_batch_the_store_rejects_is_dropped_with_the_reason_and_the_rest_goes_on():
    delivered = []

    def send(batch, timeout_s):
        if any(value.key == "bad" for value in batch):
            raise ValueError("INVALID_PARAMETER_VALUE: metric key 'bad' is not valid")
        delivered.extend(batch)

    writer = MetricWriter(send, max_outage_s=60.0, is_transient=lambda error: isinstance(error, OSError)).start()
    writer.put(values("bad", [1]))
    assert writer.flush(5)
    writer.put(values("good", [2]))
    assert writer.flush(5)
    report = writer.close(5)
    assert [value.key for value in delivered] == ["good"]
    assert report.dropped.describe() == "bad: 1 value, step 1"
    assert writer.notices()[0].startswith("MLflow rejected 1 metric values, which are dropped: ValueError")


@pytest.mark.parametrize("count", [0, 3])
def test_close_stops_the_thread_whatever_is_buffered(count):
    store = ScriptedStore()
    writer = writer_for(store)
    writer.put(values("a", range(count)))
    report = writer.close(5)
    assert not writer._thread.is_alive()
    assert report.written == count
    again = writer.close(5)  # idempotent: a second close reports the same and writes nothing more
    assert (again.written, again.dropped.describe()) == (report.written, report.dropped.describe())
    assert len(store.batches) == (1 if count else 0)


def test_a_wrapped_connection_error_is_reported_in_a_few_words():
    def send(batch, timeout_s):
        raise OSError(
            "API request to http://h:5000/api/2.0/mlflow/runs/log-batch failed with exception "
            "HTTPConnectionPool(host='h', port=5000): Max retries exceeded (Caused by NewConnectionError("
            "\"HTTPConnection(host='h', port=5000): Failed to establish a new connection: [Errno 111] "
            'Connection refused"))'
        )

    writer = MetricWriter(send, max_outage_s=60.0, is_transient=lambda error: True, first_retry_s=10.0).start()
    writer.put(values("a", [1]))
    report = writer.close(0.2)
    assert writer.notices()[0].startswith("MLflow: cannot write metrics (OSError: [Errno 111] Connection refused); ")
    assert report.dropped.total == 1 and not report.reachable
