"""The SQLite write gate: mutual exclusion, served first come, first served."""

from __future__ import annotations

import threading
import time

from service.kit.gate import WriteGate


class TestWriteGate:
    def test_waiters_are_served_in_arrival_order(self):
        gate = WriteGate()
        order: list[int] = []
        threads = []
        with gate:
            for i in range(8):
                t = threading.Thread(target=lambda i=i: _enter(gate, order, i))
                t.start()
                threads.append(t)
                # Each thread has taken its ticket before the next one starts.
                while gate._next_ticket != i + 2:
                    time.sleep(0.001)
        for t in threads:
            t.join(5)
        assert order == list(range(8))

    def test_one_holder_at_a_time(self):
        gate = WriteGate()
        inside = 0
        most = 0
        lock = threading.Lock()

        def work() -> None:
            nonlocal inside, most
            for _ in range(200):
                with gate:
                    with lock:
                        inside += 1
                        most = max(most, inside)
                    time.sleep(0)
                    with lock:
                        inside -= 1

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert most == 1

    def test_released_on_error(self):
        gate = WriteGate()
        try:
            with gate:
                raise ValueError("boom")
        except ValueError:
            pass
        acquired = threading.Event()
        t = threading.Thread(target=lambda: _enter_and_set(gate, acquired))
        t.start()
        assert acquired.wait(2)


def _enter(gate: WriteGate, order: list[int], i: int) -> None:
    with gate:
        order.append(i)


def _enter_and_set(gate: WriteGate, event: threading.Event) -> None:
    with gate:
        event.set()
