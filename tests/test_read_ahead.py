"""The background reader of training streams: same order, errors where they happen, bounded
read-ahead, and a producer that stops when the consumer does."""

import threading
import time

import pytest

from raytrainer.data.stream_batches import read_ahead


def test_items_come_in_order_and_the_end_is_the_end():
    assert list(read_ahead(range(50), depth=3)) == list(range(50))
    assert list(read_ahead([], depth=2)) == []


def test_an_error_of_the_producer_is_raised_at_its_item():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(items(), depth=2):
            seen.append(item)
    assert seen == [1, 2]


def test_reading_ahead_is_bounded_and_a_dropped_iterator_stops_the_producer():
    produced, closed = [], threading.Event()

    def items():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    iterator = read_ahead(items(), depth=2)
    assert next(iterator) == 0
    time.sleep(0.3)
    assert len(produced) <= 4  # the item handed over, two waiting, one in the producer's hands
    iterator.close()  # a loop that stops mid-epoch
    assert closed.wait(5.0) and len(produced) < 10
