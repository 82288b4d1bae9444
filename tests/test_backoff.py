"""weijian.backoff: the one retry formula; bounds that hold for any draw."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weijian.backoff import Backoff


@given(initial=st.floats(0.01, 10), cap=st.floats(0.01, 600), jitter=st.floats(0, 1),
       attempt=st.integers(1, 10_000), seed=st.integers())
def test_a_delay_is_never_above_the_cap_nor_below_the_unjittered_floor(
    initial: float, cap: float, jitter: float, attempt: int, seed: int
) -> None:
    b = Backoff(initial, cap, jitter, random.Random(seed).random)
    base = min(cap, initial * 2.0 ** min(attempt - 1, 64))
    d = b.delay(attempt)
    assert d <= cap
    assert base * (1 - jitter) <= d <= base


def test_next_counts_and_reset_starts_over() -> None:
    b = Backoff(0.5, 30, jitter=0)
    assert [b.next() for _ in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    b.reset()
    assert b.next() == 0.5


def test_full_jitter_spreads_over_the_whole_interval() -> None:
    rng = random.Random(7)
    draws = [Backoff(1, 8, jitter=1, rand=rng.random).delay(4) for _ in range(2000)]
    assert min(draws) < 0.5 and max(draws) > 7.5  # (0, 8]: anywhere, so processes spread out


@pytest.mark.parametrize("jitter", [-0.1, 1.5])
def test_a_jitter_outside_0_1_is_refused(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1, 2, jitter)
