"""The bench's timing maths on planted timings: a fake clock that only the timed functions
advance, so every time and ratio is known exactly (no real timing)."""

from types import SimpleNamespace

import pytest

from samplewise.bench import core
from samplewise.bench.core import interleaved, paired_ratio


class FakeClock:
    """``perf_counter`` that moves only when a timed function spends planted seconds."""

    def __init__(self):
        self.now = 0.0
        self.calls: list[str] = []

    def perf_counter(self) -> float:
        return self.now

    def fn(self, name: str, cost):
        """A function that records its call and spends ``cost(call_log)`` seconds."""
        def run():
            self.now += cost(self.calls)
            self.calls.append(name)
        return run


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(core, "time", SimpleNamespace(perf_counter=c.perf_counter))
    return c


def test_interleaved_times_each_call_and_reverses_the_order(clock):
    calls = {"a": 0, "b": 0}

    def growing(name, unit):  # the k-th call of `name` costs unit * k (dyadic: exact floats)
        def cost(_):
            calls[name] += 1
            return unit * calls[name]
        return clock.fn(name, cost)

    t = interleaved({"a": growing("a", 0.5), "b": growing("b", 0.25)}, 4)
    assert t == {"a": [0.5, 1.0, 1.5, 2.0], "b": [0.25, 0.5, 0.75, 1.0]}
    assert clock.calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert paired_ratio(t["a"], t["b"]) == 2.0


def test_alternating_order_cancels_a_first_position_penalty(clock):
    """Whichever function runs first in a repeat pays 1 s more (a cold cache): a costs 2 s and
    b 1 s. Interleaving with reversed order plus the paired median recovers the true 2.0; a
    fixed order would report 3.0 and a ratio of medians 2.5 / 1.5."""
    def cost(base):
        return lambda calls: base + (1.0 if len(calls) % 2 == 0 else 0.0)

    t = interleaved({"a": clock.fn("a", cost(2.0)), "b": clock.fn("b", cost(1.0))}, 4)
    assert t == {"a": [3.0, 2.0, 3.0, 2.0], "b": [1.0, 2.0, 1.0, 2.0]}
    assert paired_ratio(t["a"], t["b"]) == 2.0


def test_paired_ratio_is_the_median_of_the_per_repeat_ratios():
    # pairs matter: the ratios are 1, 5, 1 (median 1); the ratio of the medians would be 1.5
    assert paired_ratio([1.0, 10.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    # a machine that is 10x slower on one repeat shifts both sides of that pair alike
    assert paired_ratio([2.0, 40.0, 2.0], [1.0, 10.0, 1.0]) == 2.0
    # an even count: the mean of the two middle ratios
    assert paired_ratio([1.0, 2.0, 3.0, 8.0], [1.0, 1.0, 1.0, 1.0]) == 2.5
    assert paired_ratio([3.0, 1.0], [1.0, 3.0]) == pytest.approx((3 + 1 / 3) / 2)


def test_speedup_row_is_reference_over_ours_per_pair():
    row = core.speedup_row("x", ours=[1.0, 2.0, 4.0], ref=[3.0, 4.0, 20.0], unit="s",
                           measure="m", target=(">=", 2.5), notes="")
    assert (row.ours, row.reference) == (2.0, 4.0)       # medians of each side
    assert row.ratio == 3.0                             # median of 3, 2, 5 (not 4 / 2)
    assert row.status() == "pass"
    slow = core.speedup_row("x", ours=[2.0, 2.0, 2.0], ref=[3.0, 4.0, 20.0], unit="s",
                            measure="m", target=(">=", 2.5), notes="")
    assert slow.ratio == 2.0 and slow.status() == "fail"
