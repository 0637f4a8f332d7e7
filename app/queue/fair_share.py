"""The dispatch order, as pure functions of a few numbers per team.

Each team's queued jobs stand in the team's own order (higher ``priority`` first, then oldest).
The k-th of them (from 0) gets the fair-share key

    (usage + (running + k) * job_cost) / weight

where ``usage`` is the team's recent device time (decayed, see ``decayed_usage``: a job on N
devices is charged N device-seconds a second), ``running`` the jobs it runs or has been handed,
and ``job_cost`` a nominal charge per started job, so that a team's later jobs wait behind other
teams' earlier ones until its usage says otherwise. Jobs whose team is under its quotas
(``max_running_jobs``, and ``max_running_devices`` counting each job's devices in the team's
order) can start now ("startable") and come first, in key order (ties: team id); the jobs
waiting for their own team's quota follow, in the same order.

The scheduler dispatches the head of that order whenever a worker slot is free. Starting a job
moves it from ``queued`` to ``running`` of its team, which leaves every other job's key as it
was, so the order stays exact while it drains: ``position`` is the real dispatch order. It is
computed from the per-team numbers alone (no walk through the queue), so it costs the same with
ten thousand queued jobs as with ten.
"""

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class TeamState:
    team_id: str
    queued: int  # queued jobs not yet handed to the broker
    running: int  # running jobs plus queued jobs already handed to the broker
    max_running_jobs: int
    weight: float
    usage: float  # decayed GPU-seconds
    dispatched: int = 0  # of ``running``, those handed to the broker and not yet taken
    running_devices: int = 0  # the devices ``running`` hold
    max_running_devices: int | None = None  # None: no device quota
    # With a device quota: the devices of the team's first queued jobs, in its order (as many as
    # its job quota would let start).
    head_devices: tuple[int, ...] = ()

    @property
    def startable(self) -> int:
        """How many of the team's first queued jobs its quotas let start now."""
        n = max(0, min(self.queued, self.max_running_jobs - self.running))
        if self.max_running_devices is None:
            return n
        room, fits = self.max_running_devices - self.running_devices, 0
        for devices in self.head_devices[:n]:
            if devices > room:
                break
            room, fits = room - devices, fits + 1
        return fits


@dataclass(frozen=True)
class Place:
    """Where a team's k-th queued job stands: its class (0: startable now), key and team."""

    startable: bool
    key: float
    team_id: str

    def sort_key(self) -> tuple[int, float, str]:
        return (0 if self.startable else 1, self.key, self.team_id)


def place(team: TeamState, k: int, job_cost: float) -> Place:
    key = (team.usage + (team.running + k) * job_cost) / team.weight
    return Place(k < team.startable, key, team.team_id)


def _count_before(team: TeamState, lo: int, hi: int, target: Place, job_cost: float) -> int:
    """How many of ``team``'s jobs k in [lo, hi) sort before ``target`` (keys rise with k)."""
    if hi <= lo:
        return 0
    # A first guess from the key's formula, then made exact against the comparison itself.
    x = (target.key * team.weight - team.usage) / job_cost - team.running
    k = min(max(math.ceil(x) if math.isfinite(x) else lo, lo), hi)
    target_key = target.sort_key()
    while k > lo and place(team, k - 1, job_cost).sort_key() >= target_key:
        k -= 1
    while k < hi and place(team, k, job_cost).sort_key() < target_key:
        k += 1
    return k - lo


def position(teams: Mapping[str, TeamState], team_id: str, rank: int, job_cost: float) -> int:
    """The 0-based dispatch position of ``team_id``'s job ``rank`` (its place in its team's
    own order), among every queued job not yet handed to the broker."""
    team = teams[team_id]
    target = place(team, rank, job_cost)
    if target.startable:
        ahead = rank
        for other in teams.values():
            if other.team_id != team_id:
                ahead += _count_before(other, 0, other.startable, target, job_cost)
        return ahead
    ahead = sum(t.startable for t in teams.values()) + rank - team.startable
    for other in teams.values():
        if other.team_id != team_id:
            ahead += _count_before(other, other.startable, other.queued, target, job_cost)
    return ahead


def dispatch_order(teams: Mapping[str, TeamState], job_cost: float) -> Iterator[str]:
    """The teams whose next job the scheduler starts, in order, while slots last: one team id
    per dispatch. Ends when no team may start another job."""
    state = dict(teams)
    while True:
        candidates = [place(t, 0, job_cost) for t in state.values() if t.startable > 0]
        if not candidates:
            return
        best = min(candidates, key=Place.sort_key)
        yield best.team_id
        team = state[best.team_id]
        devices = team.head_devices[0] if team.head_devices else 1
        state[best.team_id] = replace(
            team,
            queued=team.queued - 1,
            running=team.running + 1,
            dispatched=team.dispatched + 1,
            running_devices=team.running_devices + devices,
            head_devices=team.head_devices[1:],
        )


def decayed_usage(
    spans: Iterable[tuple[datetime, datetime | None]],
    now: datetime,
    half_life: timedelta | None,
    window: timedelta,
) -> float:
    """GPU-seconds of the given (start, end or None while running) spans within ``window``
    before ``now``, each second weighted by 2^-(age / half_life) (by 1 without a half-life)."""
    rate = None if half_life is None else math.log(2) / half_life.total_seconds()
    total = 0.0
    for start, end in spans:
        a = min(max((now - start).total_seconds(), 0.0), window.total_seconds())  # older age
        b = max((now - (end or now)).total_seconds(), 0.0)
        if a <= b:
            continue
        total += a - b if rate is None else (math.exp(-rate * b) - math.exp(-rate * a)) / rate
    return total
