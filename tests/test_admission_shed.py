"""``admission.slowest``: which connection gives way to a new client at the limit (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from socketeer.server.admission import SHED_BELOW_RATE, SHED_MIN_AGE, slowest

NOW = 1000.0


def test_the_slowest_old_enough_connection_is_chosen() -> None:
    connections = [
        ("busy", NOW - 10, 10 * 100_000),  # 100 kB/s
        ("loris", NOW - 10, 10),  # 1 byte/s
        ("idle", NOW - 10, 0),  # nothing at all: slowest
        ("young", NOW - 0.5, 0),  # too young to judge
    ]
    key, age, rate = slowest(connections, NOW)  # type: ignore[misc]
    assert (key, age, rate) == ("idle", 10.0, 0.0)


def test_none_when_every_connection_is_young_or_busy() -> None:
    connections = [("a", NOW - 1, 0), ("b", NOW - 60, int(60 * SHED_BELOW_RATE))]
    assert slowest(connections, NOW) is None
    assert slowest([], NOW) is None


@given(
    st.lists(
        st.tuples(
            st.integers(0, 50),
            st.floats(0, 100, allow_nan=False),
            st.integers(0, 10**9),
        ),
        max_size=30,
    )
)
def test_the_choice_obeys_the_policy(rows: list[tuple[int, float, int]]) -> None:
    connections = [(key, NOW - age, moved) for key, age, moved in rows]
    found = slowest(connections, NOW)
    ages = [(key, NOW - opened, moved) for key, opened, moved in connections]  # as it sees them
    eligible = [
        (moved / age, key)
        for key, age, moved in ages
        if age >= SHED_MIN_AGE and moved / age < SHED_BELOW_RATE
    ]
    if not eligible:
        assert found is None
        return
    assert found is not None
    _key, age, rate = found
    assert age >= SHED_MIN_AGE and rate < SHED_BELOW_RATE
    assert rate == min(r for r, _ in eligible)
