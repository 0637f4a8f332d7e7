"""The dispatch order's arithmetic against a brute-force sort of every queued job."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.queue.fair_share import TeamState, decayed_usage, dispatch_order, place, position

COST = 300.0

teams = st.lists(
    st.builds(
        TeamState,
        team_id=st.sampled_from([f"team_{c}" for c in "abcdefgh"]),
        queued=st.integers(0, 12),
        running=st.integers(0, 4),
        max_running_jobs=st.integers(0, 5),
        weight=st.sampled_from([0.5, 1.0, 1.0, 2.0, 3.0]),
        usage=st.sampled_from([0.0, 0.0, 100.0, 300.0, 1234.5, 9000.0]),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda t: t.team_id,
).map(lambda ts: {t.team_id: t for t in ts})


def brute_force(states: dict[str, TeamState]) -> list[tuple[str, int]]:
    """Every queued job as (team, rank in its team), sorted by its place."""
    jobs = [(t.team_id, k) for t in states.values() for k in range(t.queued)]
    return sorted(jobs, key=lambda job: place(states[job[0]], job[1], COST).sort_key())


@settings(max_examples=300, deadline=None)
@given(teams)
def test_position_is_the_place_in_the_sorted_queue(states: dict[str, TeamState]) -> None:
    for expected, (team_id, rank) in enumerate(brute_force(states)):
        assert position(states, team_id, rank, COST) == expected


@settings(max_examples=300, deadline=None)
@given(teams)
def test_dispatches_take_the_queue_from_its_head(states: dict[str, TeamState]) -> None:
    startable = sum(t.startable for t in states.values())
    assert list(dispatch_order(states, COST)) == [
        team for team, _ in brute_force(states)[:startable]
    ]


def test_a_team_at_its_quota_waits_behind_every_startable_job() -> None:
    states = {
        "team_a": TeamState("team_a", queued=3, running=2, max_running_jobs=2, weight=1, usage=0),
        "team_b": TeamState("team_b", queued=2, running=0, max_running_jobs=1, weight=1, usage=1e6),
    }
    assert list(dispatch_order(states, COST)) == ["team_b"]
    assert position(states, "team_b", 0, COST) == 0
    assert position(states, "team_a", 0, COST) == 1  # quota-bound: after all startable jobs
    assert position(states, "team_b", 1, COST) == 4


def test_the_lighter_user_goes_first_and_weight_buys_share() -> None:
    heavy = TeamState("team_heavy", queued=100, running=2, max_running_jobs=2, weight=1, usage=5000)
    light = TeamState("team_light", queued=5, running=0, max_running_jobs=2, weight=1, usage=0)
    assert list(dispatch_order({t.team_id: t for t in (heavy, light)}, COST)) == ["team_light"] * 2
    # With ten times the weight, the heavy team's usage weighs a tenth as much.
    weighted = TeamState(
        "team_heavy", queued=1, running=0, max_running_jobs=2, weight=10, usage=2000
    )
    light_busy = TeamState(
        "team_light", queued=1, running=0, max_running_jobs=2, weight=1, usage=300
    )
    order = dispatch_order({t.team_id: t for t in (weighted, light_busy)}, COST)
    assert next(order) == "team_heavy"


def test_usage_decays_by_half_each_half_life() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    window = timedelta(hours=24)
    recent = decayed_usage([(now - hour, now)], now, None, window)
    assert recent == 3600.0
    fresh = decayed_usage([(now - timedelta(seconds=10), now)], now, hour, window)
    old = decayed_usage([(now - hour - timedelta(seconds=10), now - hour)], now, hour, window)
    assert abs(old / fresh - 0.5) < 1e-3
    running = decayed_usage([(now - hour, None)], now, None, window)
    assert running == 3600.0
    clipped = decayed_usage([(now - 30 * hour, now - 20 * hour)], now, None, window)
    assert clipped == 4 * 3600.0
