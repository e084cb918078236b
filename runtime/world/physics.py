"""Event-driven 2-D rigid-body physics of the world, in continuous time.

Bodies do not rotate. Between contacts a flying body follows a parabola under gravity, a
resting body stays put, so every position is a polynomial of degree <= 2 in time and every
contact instant is the root of a polynomial, found exactly (not at frame or step boundaries):

- floor ``y - h = 0`` and walls ``x -+ w = 0``: closed-form roots (the body's own half height
  ``h`` / half width ``w``, so the drawn shape touches the floor exactly);
- body-body: bodies collide as circles of radius ``r`` (an approximation for the non-round
  shapes); ``|dp(t)|^2 - (r_i + r_j)^2`` is a quartic (quadratic when both fly), solved with
  ``numpy.roots`` and polished by Newton steps.

The simulator jumps from one contact to the next (no time stepping), resolves it with an
impulse and records a new trajectory segment for each body whose motion changed.

Contact rules:
- floor: the normal speed is the impact speed; below ``MIN_IMPACT_SPEED`` the body comes to
  rest (``v = 0``), otherwise it bounces with its restitution and loses 20 % of its
  horizontal speed (friction);
- walls: reflect ``vx`` with the body's restitution;
- body-body: an impulse along the contact normal with restitution ``sqrt(e_i e_j)``, masses
  proportional to area; a resting body is an immovable obstacle (it never wakes up). A body
  that lands slowly on a resting one is pushed off with at least ``0.4 m/s`` and a sideways
  kick, so it cannot bounce in place forever (no Zeno sequences).

After ``max_contacts`` body-body contacts, bodies stop colliding with each other (a guard
against pathological clusters); floor and walls still act, so the run always ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import FLOOR_Y, GRAVITY, MIN_IMPACT_SPEED, WALL_LEFT, WALL_RIGHT

FLOOR_FRICTION = 0.8  # horizontal speed kept at each floor bounce
MIN_SEPARATION_SPEED = 0.4  # m/s, after a contact with a resting body
SIDE_KICK = 0.4  # m/s, sideways push off the top of a resting body
_EPS = 1e-12


@dataclass(frozen=True)
class Body:
    """The physical view of one object."""

    half_width: float  # m, wall contacts
    half_height: float  # m, floor contacts
    radius: float  # m, body-body contacts (circle approximation)
    mass: float  # arbitrary units; only ratios matter
    restitution: float
    position: tuple[float, float]  # m, at release
    velocity: tuple[float, float]  # m/s, at release
    release_time: float = 0.0  # s; before it the body does not exist
    resting: bool = False  # starts at rest on the floor (then position y == half_height)


@dataclass(frozen=True)
class Segment:
    """Motion of one body from ``time`` until its next segment."""

    time: float
    position: tuple[float, float]
    velocity: tuple[float, float]
    accel_y: float  # -GRAVITY when flying, 0 when resting or absent
    active: bool  # False before release


@dataclass(frozen=True)
class Contact:
    time: float  # s, exact
    kind: str  # "floor", "wall" or "object"
    bodies: tuple[int, ...]  # (i,) or (i, j)
    speed: float  # m/s, relative normal speed before the contact
    point: tuple[float, float]  # m, contact point


def simulate(bodies: tuple[Body, ...], duration: float, max_contacts: int = 200
             ) -> tuple[tuple[tuple[Segment, ...], ...], tuple[Contact, ...]]:
    """Run the world for ``duration`` seconds: per-body segments and all contacts in order."""
    n = len(bodies)
    pos = np.array([b.position for b in bodies], dtype=np.float64).reshape(n, 2)  # (n, 2)
    vel = np.array([b.velocity for b in bodies], dtype=np.float64).reshape(n, 2)  # (n, 2)
    active = np.array([b.release_time <= 0.0 for b in bodies], dtype=bool)
    resting = np.array([b.resting for b in bodies], dtype=bool)
    vel[resting] = 0.0
    segments: list[list[Segment]] = [[] for _ in range(n)]
    for i in range(n):
        segments[i].append(_segment(0.0, pos[i], vel[i], active[i], resting[i]))
    contacts: list[Contact] = []
    n_pair = 0
    t = 0.0
    for _ in range(100 * (max_contacts + n) + 1000):  # hard bound; loop ends on time
        dt, what = _next_event(bodies, pos, vel, active, resting, t, n_pair < max_contacts)
        if t + dt >= duration:
            break
        _advance(pos, vel, active, resting, dt)
        t = float(t + dt)
        kind, idx = what
        if kind == "release":
            (i,) = idx
            active[i] = True
            pos[i] = bodies[i].position
            vel[i] = bodies[i].velocity
            changed = idx
        elif kind == "floor":
            changed, contact = _floor(bodies, pos, vel, resting, idx[0], t)
            contacts.append(contact)
        elif kind == "wall":
            changed, contact = _wall(bodies, pos, vel, idx[0], t)
            contacts.append(contact)
        else:
            changed, contact = _pair(bodies, pos, vel, resting, idx, t)
            contacts.append(contact)
            n_pair += 1
        for i in changed:
            segments[i].append(_segment(t, pos[i], vel[i], active[i], resting[i]))
    return tuple(tuple(s) for s in segments), tuple(contacts)


def _segment(t: float, p: np.ndarray, v: np.ndarray, active: bool, resting: bool) -> Segment:
    ay = -GRAVITY if active and not resting else 0.0
    return Segment(float(t), (float(p[0]), float(p[1])), (float(v[0]), float(v[1])), ay,
                   bool(active))


def _advance(pos, vel, active, resting, dt: float) -> None:
    fly = active & ~resting
    pos[fly] += vel[fly] * dt
    pos[fly, 1] -= 0.5 * GRAVITY * dt * dt
    vel[fly, 1] -= GRAVITY * dt


def _next_event(bodies, pos, vel, active, resting, t: float, pairs: bool):
    """(dt, (kind, body indices)) of the earliest next event; dt = inf when none."""
    best = (np.inf, ("none", ()))
    for i, b in enumerate(bodies):
        if not active[i]:
            best = min(best, (max(b.release_time - t, 0.0), ("release", (i,))), key=_key)
            continue
        if resting[i]:
            continue
        x, y = pos[i]
        vx, vy = vel[i]
        gap = max(y - FLOOR_Y - b.half_height, 0.0)
        dt_floor = (vy + np.sqrt(vy * vy + 2.0 * GRAVITY * gap)) / GRAVITY
        best = min(best, (dt_floor, ("floor", (i,))), key=_key)
        if vx < 0.0:
            dt_wall = max(x - b.half_width - WALL_LEFT, 0.0) / -vx
            best = min(best, (dt_wall, ("wall", (i,))), key=_key)
        elif vx > 0.0:
            dt_wall = max(WALL_RIGHT - b.half_width - x, 0.0) / vx
            best = min(best, (dt_wall, ("wall", (i,))), key=_key)
    if pairs:
        for i in range(len(bodies)):
            for j in range(i + 1, len(bodies)):
                if not (active[i] and active[j]) or (resting[i] and resting[j]):
                    continue
                dt = _pair_time(pos[i] - pos[j], vel[i] - vel[j],
                                _accel(resting[i]) - _accel(resting[j]),
                                bodies[i].radius + bodies[j].radius)
                best = min(best, (dt, ("object", (i, j))), key=_key)
    return best


def _key(item):
    return item[0]


def _accel(resting: bool) -> np.ndarray:
    return np.array([0.0, 0.0 if resting else -GRAVITY])


def _pair_time(dp: np.ndarray, dv: np.ndarray, da: np.ndarray, r: float) -> float:
    """Earliest tau >= 0 at which |dp + dv tau + da tau^2 / 2| falls to r while approaching."""
    a, b, c = dp, dv, 0.5 * da  # d(tau) = a + b tau + c tau^2
    coeffs = np.array([c @ c, 2.0 * (b @ c), b @ b + 2.0 * (a @ c), 2.0 * (a @ b), a @ a - r * r])
    nz = np.flatnonzero(np.abs(coeffs) > 1e-15)
    if nz.size == 0 or nz[0] == len(coeffs) - 1:
        return np.inf
    roots = np.roots(coeffs[nz[0]:])
    roots = roots[np.abs(roots.imag) < 1e-6].real
    best = np.inf
    for tau in np.sort(roots):
        if tau < -1e-9:
            continue
        tau = _polish(coeffs, max(tau, 0.0))
        d = a + b * tau + c * tau * tau
        dd = b + 2.0 * c * tau
        if d @ dd < 0.0:  # approaching: the distance is shrinking through r
            best = tau
            break
    return best


def _polish(coeffs: np.ndarray, tau: float) -> float:
    deriv = np.polyder(coeffs)
    for _ in range(3):
        slope = np.polyval(deriv, tau)
        if abs(slope) < _EPS:
            break
        tau = max(tau - np.polyval(coeffs, tau) / slope, 0.0)
    return tau


def _floor(bodies, pos, vel, resting, i: int, t: float):
    b = bodies[i]
    pos[i, 1] = FLOOR_Y + b.half_height
    speed = max(-vel[i, 1], 0.0)
    if speed < MIN_IMPACT_SPEED:
        resting[i] = True
        vel[i] = 0.0
    else:
        vel[i, 1] = b.restitution * speed
        vel[i, 0] *= FLOOR_FRICTION
    return (i,), Contact(t, "floor", (i,), float(speed), (float(pos[i, 0]), FLOOR_Y))


def _wall(bodies, pos, vel, i: int, t: float):
    b = bodies[i]
    left = vel[i, 0] < 0.0
    pos[i, 0] = WALL_LEFT + b.half_width if left else WALL_RIGHT - b.half_width
    speed = abs(vel[i, 0])
    vel[i, 0] = b.restitution * speed * (1.0 if left else -1.0)
    point = (WALL_LEFT if left else WALL_RIGHT, float(pos[i, 1]))
    return (i,), Contact(t, "wall", (i,), float(speed), point)


def _pair(bodies, pos, vel, resting, idx: tuple[int, int], t: float):
    i, j = idx
    bi, bj = bodies[i], bodies[j]
    d = pos[i] - pos[j]
    n = d / max(np.linalg.norm(d), _EPS)  # unit normal, from j to i
    u = float((vel[i] - vel[j]) @ n)  # < 0: approaching
    e = float(np.sqrt(bi.restitution * bj.restitution))
    point = pos[j] + n * bj.radius
    contact = Contact(t, "object", (i, j), abs(u), (float(point[0]), float(point[1])))
    if resting[j] or resting[i]:
        k, sign = (i, 1.0) if resting[j] else (j, -1.0)  # k flies; normal pointing to k
        nk = n * sign
        vel[k] -= (1.0 + e) * float(vel[k] @ nk) * nk
        sep = float(vel[k] @ nk)
        if sep < MIN_SEPARATION_SPEED:
            vel[k] += (MIN_SEPARATION_SPEED - sep) * nk
        if abs(nk[0]) < 0.5:  # landed on top: slide off sideways
            vel[k, 0] += SIDE_KICK * (1.0 if nk[0] >= 0.0 else -1.0)
        return (k,), contact
    inv_i, inv_j = 1.0 / bi.mass, 1.0 / bj.mass
    impulse = -(1.0 + e) * u / (inv_i + inv_j)
    vel[i] += impulse * inv_i * n
    vel[j] -= impulse * inv_j * n
    return (i, j), contact


def positions_at(segments: tuple[Segment, ...], times: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 2) and active flags (N,) of one body at ``times`` (N,), in seconds."""
    times = np.asarray(times, dtype=np.float64)
    t0 = np.array([s.time for s in segments])  # (K,)
    k = np.clip(np.searchsorted(t0, times, side="right") - 1, 0, len(segments) - 1)  # (N,)
    p = np.array([s.position for s in segments])[k]  # (N, 2)
    v = np.array([s.velocity for s in segments])[k]  # (N, 2)
    ay = np.array([s.accel_y for s in segments])[k]  # (N,)
    active = np.array([s.active for s in segments])[k]  # (N,)
    tau = times - t0[k]  # (N,)
    out = p + v * tau[:, None]  # (N, 2)
    out[:, 1] += 0.5 * ay * tau * tau
    return out, active
