"""system_app.coalescing: the calls several threads make at once, one batch."""

import threading
import time

import pytest

from system_app.coalescing import Coalescer


class Batches:
    """A run_batch that records each batch and the thread that ran it, and
    holds its first batch until ``release`` is set."""

    def __init__(self, fail_on=None):
        self.batches = []
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items):
        self.batches.append((list(items), threading.get_ident()))
        if len(self.batches) == 1:
            assert self.release.wait(10)
        if self.fail_on in items:
            raise ValueError(f"refused {self.fail_on}")
        return [item * 10 for item in items]


def wait_for(condition):
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def start(coalescer, items, results):
    """One thread per item, calling the coalescer; results[item] is its
    result or the exception it raised."""

    def call(item):
        try:
            results[item] = coalescer(item)
        except BaseException as error:  # KeyboardInterrupt included: kept, not raised in the thread
            results[item] = error

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return threads


def test_a_call_alone_runs_at_once_in_its_own_thread():
    batches = Batches()
    batches.release.set()
    coalescer = Coalescer(batches, joinable=lambda: True)
    assert coalescer(4) == 40
    assert batches.batches == [([4], threading.get_ident())]


def test_calls_made_while_a_batch_runs_go_together_in_the_next_one():
    batches = Batches()
    coalescer = Coalescer(batches, joinable=lambda: True)
    results = {}
    first = start(coalescer, [1], results)
    wait_for(lambda: batches.batches)  # the first call leads, and its batch is held
    others = start(coalescer, [2, 3, 4], results)
    wait_for(lambda: len(coalescer._queue) == 3)
    batches.release.set()
    for thread in first + others:
        thread.join(10)
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}
    (first_items, first_thread), (second_items, second_thread) = batches.batches
    assert first_items == [1]
    assert sorted(second_items) == [2, 3, 4]
    # The second batch ran in one of its own callers' threads (on its connection).
    assert second_thread != first_thread
    assert second_thread in {thread.ident for thread in others}


def test_every_call_of_a_failed_batch_raises_and_the_next_batch_still_runs():
    batches = Batches(fail_on=3)
    coalescer = Coalescer(batches, joinable=lambda: True)
    results = {}
    first = start(coalescer, [1], results)
    wait_for(lambda: batches.batches)
    failing = start(coalescer, [2, 3], results)
    wait_for(lambda: len(coalescer._queue) == 2)
    batches.release.set()
    for thread in first + failing:
        thread.join(10)
    assert results[1] == 10
    assert [str(results[item]) for item in (2, 3)] == ["refused 3", "refused 3"]
    assert results[2] is not results[3]  # each thread raises its own copy
    assert coalescer(5) == 50  # the lead was handed back: a new call leads at once


def test_a_call_that_may_not_join_runs_alone_while_a_batch_is_in_flight():
    batches = Batches()
    joinable = threading.local()
    coalescer = Coalescer(batches, joinable=lambda: getattr(joinable, "value", True))
    results = {}
    first = start(coalescer, [1], results)
    wait_for(lambda: batches.batches)
    joinable.value = False
    assert coalescer(7) == 70
    batches.release.set()
    first[0].join(10)
    assert [items for items, _thread in batches.batches] == [[1], [7]]


def test_a_batch_that_returns_too_few_results_fails_its_calls():
    coalescer = Coalescer(lambda items: [], joinable=lambda: True)
    with pytest.raises(RuntimeError, match="a batch of 1 calls got 0 results"):
        coalescer(1)


def test_an_interrupted_leader_gives_the_others_of_its_batch_a_plain_error():
    batches = Batches()

    def interrupted(items):
        batches(items)
        if 3 in items:
            raise KeyboardInterrupt
        return [item * 10 for item in items]

    coalescer = Coalescer(interrupted, joinable=lambda: True)
    results = {}
    first = start(coalescer, [1], results)
    wait_for(lambda: batches.batches)
    leader = start(coalescer, [2], results)  # queued first, so it leads the next batch
    wait_for(lambda: len(coalescer._queue) == 1)
    other = start(coalescer, [3], results)
    wait_for(lambda: len(coalescer._queue) == 2)
    batches.release.set()
    for thread in first + leader + other:
        thread.join(10)
    assert isinstance(results[2], KeyboardInterrupt)
    assert isinstance(results[3], RuntimeError) and "interrupted" in str(results[3])


def test_many_threads_calling_over_and_over_each_get_their_own_results():
    """Leads handed on thousands of times: every call wakes once, with its own
    result (a wake-up lock released twice would raise in a leader)."""
    sizes = []

    def run_batch(items):
        sizes.append(len(items))
        time.sleep(0.0002)  # a statement in flight, for the others to queue behind
        return [item * 10 for item in items]

    coalescer = Coalescer(run_batch, joinable=lambda: True)
    wrong = []

    def calls(thread_number):
        for n in range(200):
            item = thread_number * 1000 + n
            if coalescer(item) != item * 10:
                wrong.append(item)

    threads = [threading.Thread(target=calls, args=(number,)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == [] and sum(sizes) == 16 * 200
    assert max(sizes) > 1  # the calls did queue behind one another
