"""Procedural streets, blocks and objects of one synthetic scene (seeded, deterministic).

A scene is a square of `extent` metres: a grid of roads (one or two lanes per direction, optional
parking strips and medians) with sidewalks, blocks of buildings / parks / parking lots, street
furniture and trees, parked and moving objects of every Occ3D class, and an ego route along one road.
The ground is a 2D class raster (plus a lane-paint mask); everything above it is `Primitives`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occnet.classes import OCC3D_CLASS_NAMES, class_id

from .primitives import BOX, CYLINDER, ELLIPSOID, Primitives

C = {n: class_id(n) for n in OCC3D_CLASS_NAMES if n != "free"}

# nuScenes category of each object class (for instance / sample_annotation tables)
CATEGORY = {
    C["car"]: "vehicle.car",
    C["truck"]: "vehicle.truck",
    C["bus"]: "vehicle.bus.rigid",
    C["trailer"]: "vehicle.trailer",
    C["construction_vehicle"]: "vehicle.construction",
    C["motorcycle"]: "vehicle.motorcycle",
    C["bicycle"]: "vehicle.bicycle",
    C["pedestrian"]: "human.pedestrian.adult",
    C["traffic_cone"]: "movable_object.trafficcone",
    C["barrier"]: "movable_object.barrier",
    C["others"]: "movable_object.pushable_pullable",
}
# (length, width, height) ranges in metres
SIZES = {
    C["car"]: ((3.9, 5.0), (1.7, 2.0), (1.4, 1.8)),
    C["truck"]: ((6.0, 9.0), (2.3, 2.6), (2.8, 3.6)),
    C["bus"]: ((10.0, 12.5), (2.5, 2.7), (3.0, 3.5)),
    C["trailer"]: ((6.0, 12.0), (2.4, 2.6), (3.0, 3.8)),
    C["construction_vehicle"]: ((5.0, 7.5), (2.4, 3.0), (2.8, 3.6)),
    C["motorcycle"]: ((1.9, 2.3), (0.7, 0.9), (1.1, 1.4)),
    C["bicycle"]: ((1.6, 1.9), (0.5, 0.7), (1.0, 1.2)),
    C["pedestrian"]: ((0.5, 0.8), (0.5, 0.7), (1.55, 1.95)),
    C["traffic_cone"]: ((0.35, 0.45), (0.35, 0.45), (0.6, 0.9)),
    C["barrier"]: ((1.8, 2.4), (0.4, 0.6), (0.9, 1.1)),
    C["others"]: ((0.5, 1.2), (0.5, 1.0), (0.8, 1.4)),
}
LANE = 3.5
PARKING = 2.3
CELL = 0.2  # ground raster cell (m)


@dataclass
class Road:
    axis: int  # 0: runs along x (at y = pos), 1: runs along y (at x = pos)
    pos: float
    lanes: int  # per direction
    parking: bool
    median: bool
    sidewalk: float

    @property
    def carriage_half(self) -> float:  # driving lanes (+ median) on one side
        return self.lanes * LANE + (1.0 if self.median else 0.0)

    @property
    def half_width(self) -> float:
        return self.carriage_half + (PARKING if self.parking else 0.0)


@dataclass
class SceneObject:
    """A thing with a box annotation: parts are boxes in the object's frame (x forward, centre at z=0)."""

    cls: int
    instance: int
    size: tuple[float, float, float]  # l, w, h of the annotation box
    p0: np.ndarray  # (2,) xy of the box centre at t = 0
    yaw: float
    speed: float  # m/s along yaw
    parts: np.ndarray  # (K, 7) box params (local cx, cy, cz, hx, hy, hz, yaw) with cz from the ground
    color: np.ndarray  # (3,)

    def center_at(self, t: float) -> np.ndarray:
        d = np.array([np.cos(self.yaw), np.sin(self.yaw)])
        xy = self.p0 + self.speed * t * d
        return np.array([xy[0], xy[1], self.size[2] / 2])


@dataclass
class World:
    extent: float
    roads: list[Road]
    ground: np.ndarray  # (n, n) uint8 class raster, cell CELL, origin (0, 0)
    paint: np.ndarray  # (n, n) bool lane markings
    static: Primitives
    objects: list[SceneObject]
    ego_start: np.ndarray  # (2,)
    ego_yaw: float
    ego_speed: float
    seed: int
    stats: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def ground_at(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class and paint flag of ground points (outside the scene: terrain)."""
        n = self.ground.shape[0]
        i = np.floor(x / CELL).astype(np.int64)
        j = np.floor(y / CELL).astype(np.int64)
        inside = (i >= 0) & (i < n) & (j >= 0) & (j < n)
        ic, jc = np.clip(i, 0, n - 1), np.clip(j, 0, n - 1)
        cls = np.where(inside, self.ground[ic, jc], C["terrain"]).astype(np.uint8)
        return cls, inside & self.paint[ic, jc]

    def ego_pose(self, t: float) -> np.ndarray:
        """(4, 4) ego -> world at time t (seconds from the scene start)."""
        d = np.array([np.cos(self.ego_yaw), np.sin(self.ego_yaw)])
        xy = self.ego_start + self.ego_speed * t * d
        T = np.eye(4)
        c, s = np.cos(self.ego_yaw), np.sin(self.ego_yaw)
        T[:2, :2] = [[c, -s], [s, c]]
        T[:2, 3] = xy
        return T

    def primitives_at(self, t: float) -> Primitives:
        """Static primitives plus every object's parts placed at time t."""
        if not self.objects:
            return self.static
        if "parts" not in self._cache:  # the objects' parts stacked once, placed per call
            obs = self.objects
            owner = np.concatenate([np.full(len(o.parts), i) for i, o in enumerate(obs)])
            self._cache["parts"] = (
                np.concatenate([o.parts for o in obs]),
                owner,
                np.array([o.p0 for o in obs]),
                np.array([o.yaw for o in obs]),
                np.array([o.speed for o in obs]),
                np.array([o.size[2] / 2 for o in obs]),
                np.array([o.cls for o in obs], np.uint8)[owner],
                np.array([o.instance for o in obs], np.int32)[owner],
                np.array([o.color for o in obs], np.float32)[owner],
            )
        parts, owner, p0, yaw, speed, zc, cls, inst, color = self._cache["parts"]
        c, s = np.cos(yaw)[owner], np.sin(yaw)[owner]
        centre = p0 + (speed * t)[:, None] * np.stack([np.cos(yaw), np.sin(yaw)], 1)
        p = parts.copy()
        p[:, 0] = centre[owner, 0] + c * parts[:, 0] - s * parts[:, 1]
        p[:, 1] = centre[owner, 1] + s * parts[:, 0] + c * parts[:, 1]
        p[:, 2] += zc[owner]
        p[:, 6] += yaw[owner]
        moving = Primitives(np.zeros(len(p), np.int8) + BOX, p, cls, inst, color)
        return Primitives.concat([self.static, moving])


BASE_COLORS = {  # RGB in [0, 1]
    C["others"]: (0.45, 0.35, 0.25),
    C["barrier"]: (0.85, 0.45, 0.15),
    C["bicycle"]: (0.15, 0.5, 0.75),
    C["bus"]: (0.85, 0.7, 0.15),
    C["car"]: (0.5, 0.5, 0.55),
    C["construction_vehicle"]: (0.95, 0.65, 0.05),
    C["motorcycle"]: (0.6, 0.1, 0.1),
    C["pedestrian"]: (0.55, 0.3, 0.35),
    C["traffic_cone"]: (1.0, 0.4, 0.0),
    C["trailer"]: (0.7, 0.7, 0.65),
    C["truck"]: (0.3, 0.35, 0.6),
    C["driveable_surface"]: (0.23, 0.23, 0.25),
    C["other_flat"]: (0.45, 0.42, 0.38),
    C["sidewalk"]: (0.62, 0.6, 0.56),
    C["terrain"]: (0.35, 0.5, 0.2),
    C["manmade"]: (0.6, 0.52, 0.45),
    C["vegetation"]: (0.15, 0.4, 0.12),
}


class _Builder:
    """Collects primitives and objects while the layout is generated."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.kind: list[int] = []
        self.params: list[np.ndarray] = []
        self.cls: list[int] = []
        self.inst: list[int] = []
        self.col: list[np.ndarray] = []
        self.objects: list[SceneObject] = []
        self.next_instance = 1

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def color(self, cls: int, spread: float = 0.12) -> np.ndarray:
        base = np.array(BASE_COLORS[cls])
        return np.clip(base * (1 + self.rng.uniform(-spread, spread, 3)), 0, 1)

    def add(self, kind: int, params, cls: int, instance: int | None = None, color=None) -> int:
        inst = self.new_instance() if instance is None else instance
        self.kind.append(kind)
        self.params.append(np.asarray(params, dtype=np.float64))
        self.cls.append(cls)
        self.inst.append(inst)
        self.col.append(self.color(cls) if color is None else color)
        return inst

    def tree(self, x: float, y: float) -> None:
        r = self.rng
        inst = self.new_instance()
        trunk_h, crown = r.uniform(1.8, 3.2), r.uniform(1.4, 2.8)
        self.add(
            CYLINDER,
            (x, y, 0.0, trunk_h + 0.5 * crown, r.uniform(0.12, 0.25), 0, 0),
            C["vegetation"],
            inst,
            np.array([0.35, 0.25, 0.15]),
        )
        self.add(
            ELLIPSOID,
            (x, y, trunk_h + crown * 0.9, crown, crown, crown * r.uniform(0.8, 1.2), 0),
            C["vegetation"],
            inst,
        )

    def pole(self, x: float, y: float, sign: bool) -> None:
        inst = self.new_instance()
        h = self.rng.uniform(6.0, 9.0)
        self.add(CYLINDER, (x, y, 0.0, h, 0.12, 0, 0), C["manmade"], inst, np.array([0.4, 0.4, 0.42]))
        if sign:
            self.add(
                BOX,
                (x, y, h * 0.45, 0.05, 0.4, 0.3, self.rng.uniform(0, np.pi)),
                C["manmade"],
                inst,
                np.array([0.1, 0.3, 0.7]),
            )

    def thing(self, cls: int, x: float, y: float, yaw: float, speed: float = 0.0, rider: bool = False) -> SceneObject:
        """An object with an annotation box; vehicles get a cabin, two-wheelers an optional rider."""
        r = self.rng
        (l0, l1), (w0, w1), (h0, h1) = SIZES[cls]
        length, width, height = r.uniform(l0, l1), r.uniform(w0, w1), r.uniform(h0, h1)
        parts = []
        if cls in (C["car"], C["truck"], C["construction_vehicle"]):
            body_h = height * (0.55 if cls == C["car"] else 0.5)
            parts.append(
                (0, 0, -height / 2 + 0.15 + (body_h - 0.15) / 2, length / 2, width / 2, (body_h - 0.15) / 2, 0)
            )
            cab_l = length * (0.5 if cls == C["car"] else 0.3)
            cab_x = -0.05 * length if cls == C["car"] else length / 2 - cab_l / 2
            parts.append(
                (
                    cab_x,
                    0,
                    -height / 2 + body_h + (height - body_h) / 2,
                    cab_l / 2,
                    width / 2 * 0.92,
                    (height - body_h) / 2,
                    0,
                )
            )
            if cls == C["truck"]:  # cargo box behind the cab
                parts.append((-0.15 * length, 0, 0.1, 0.35 * length, width / 2, height / 2 - 0.1, 0))
        elif cls in (C["bicycle"], C["motorcycle"]):
            wheel_h = height * (0.75 if rider else 1.0)
            if rider:
                height = wheel_h + r.uniform(0.9, 1.1)
            parts.append((0, 0, -height / 2 + wheel_h / 2, length / 2, width / 4, wheel_h / 2, 0))
            if rider:
                parts.append(
                    (
                        -0.1 * length,
                        0,
                        -height / 2 + wheel_h + (height - wheel_h) / 2,
                        0.22,
                        0.22,
                        (height - wheel_h) / 2,
                        0,
                    )
                )
        elif cls == C["pedestrian"]:
            parts.append((0, 0, -0.1, length / 2 * 0.7, width / 2 * 0.8, height / 2 - 0.12, 0))
            parts.append((0, 0, height / 2 - 0.12, 0.11, 0.11, 0.12, 0))
        else:
            parts.append((0, 0, 0, length / 2, width / 2, height / 2, 0))
        ob = SceneObject(
            cls=cls,
            instance=self.new_instance(),
            size=(length, width, height),
            p0=np.array([x, y]),
            yaw=float(yaw),
            speed=float(speed),
            parts=np.asarray(parts, dtype=np.float64),
            color=self.color(cls, 0.35 if cls == C["car"] else 0.15),
        )
        if cls == C["car"]:  # cars come in many colours
            ob.color = np.clip(
                r.choice(
                    [
                        np.array(c)
                        for c in (
                            (0.8, 0.8, 0.82),
                            (0.1, 0.1, 0.12),
                            (0.6, 0.1, 0.1),
                            (0.15, 0.25, 0.55),
                            (0.5, 0.5, 0.52),
                        )
                    ]
                )
                * (1 + r.uniform(-0.1, 0.1, 3)),
                0,
                1,
            )
        self.objects.append(ob)
        return ob

    def primitives(self) -> Primitives:
        return Primitives(
            np.asarray(self.kind, np.int8),
            np.asarray(self.params).reshape(-1, 7),
            np.asarray(self.cls, np.uint8),
            np.asarray(self.inst, np.int32),
            np.asarray(self.col, np.float32).reshape(-1, 3),
        )


def _road_positions(rng: np.random.Generator, extent: float) -> list[float]:
    pos, x = [], rng.uniform(25, 45)
    while x < extent - 25:
        pos.append(x)
        x += rng.uniform(70, 110)
    return pos


def _lay_roads(rng: np.random.Generator, extent: float) -> list[Road]:
    roads = []
    for axis in (0, 1):
        for p in _road_positions(rng, extent):
            lanes = int(rng.choice([1, 2], p=[0.55, 0.45]))
            roads.append(
                Road(
                    axis,
                    p,
                    lanes,
                    parking=bool(rng.random() < 0.6),
                    median=lanes == 2 and rng.random() < 0.5,
                    sidewalk=float(rng.uniform(2.5, 4.5)),
                )
            )
    return roads


@dataclass
class _Layout:
    """The road grid and the questions the placement steps ask of it."""

    roads: list[Road]
    extent: float

    def __post_init__(self) -> None:
        self.xs = sorted(r.pos for r in self.roads if r.axis == 1)
        self.ys = sorted(r.pos for r in self.roads if r.axis == 0)
        self.road_of = {(r.axis, r.pos): r for r in self.roads}

    def crossing_pos(self, r: Road) -> list[float]:
        """Positions (along r) of the roads that cross it."""
        return self.ys if r.axis == 1 else self.xs

    def near_crossing(self, r: Road, s: float, margin: float) -> bool:
        return any(
            abs(s - p) < self.road_of[(1 - r.axis, p)].half_width + self.road_of[(1 - r.axis, p)].sidewalk + margin
            for p in self.crossing_pos(r)
        )

    @staticmethod
    def place(r: Road, s: float, off: float) -> tuple[float, float]:
        """World xy of the point `s` along road r and `off` across it."""
        return (s, r.pos + off) if r.axis == 0 else (r.pos + off, s)

    def block_span(self, axis: int, lo: float, hi: float) -> tuple[float, float]:
        """The usable span between two road positions (or the scene edge), sidewalks excluded."""
        a = (
            lo
            + (
                self.road_of[(axis, lo)].half_width + self.road_of[(axis, lo)].sidewalk
                if (axis, lo) in self.road_of
                else 0
            )
            + 0.5
        )
        z = (
            hi
            - (
                self.road_of[(axis, hi)].half_width + self.road_of[(axis, hi)].sidewalk
                if (axis, hi) in self.road_of
                else 0
            )
            - 0.5
        )
        return a, z


def _paint_ground(roads: list[Road], extent: float) -> tuple[np.ndarray, np.ndarray]:
    """The ground class raster (terrain, sidewalks, roads, medians) and the lane-paint mask.

    Roads are axis-aligned, so every test is a 1D profile across a road (or along it) and each mask is their
    outer product: the same comparisons of the same coordinates as on the full (n, n) raster, at a fraction of
    the cost (the raster is 1800 x 1800 cells)."""
    n = int(round(extent / CELL))
    centres = (np.arange(n) + 0.5) * CELL
    ground = np.full((n, n), C["terrain"], np.uint8)
    paint = np.zeros((n, n), bool)

    def outer(r: Road, across: np.ndarray, along: np.ndarray) -> np.ndarray:
        """(n, n) mask [x, y] of a profile across road r and one along it."""
        return across[None, :] & along[:, None] if r.axis == 0 else across[:, None] & along[None, :]

    def band(r: Road, mask: np.ndarray) -> tuple:
        """Index of the cells whose coordinate across road r lies in `mask` (n,)."""
        return (slice(None), mask) if r.axis == 0 else (mask, slice(None))

    across = [centres - r.pos for r in roads]  # distance to each road's centre line (y for axis 0, x for axis 1)
    dashes = np.mod(centres, 9.0) < 4.5  # the dashed lines' pattern along any road: 4.5 m painted in every 9 m
    for r, a in zip(roads, across):
        ground[band(r, np.abs(a) < r.half_width + r.sidewalk)] = C["sidewalk"]
    for r, a in zip(roads, across):
        ground[band(r, np.abs(a) < r.half_width)] = C["driveable_surface"]
    for i, (r, a) in enumerate(zip(roads, across)):
        # where a crossing road (with its sidewalks) cuts road r: a profile along r
        crossing = np.zeros(n, bool)
        for j, (r2, a2) in enumerate(zip(roads, across)):
            if j != i and r2.axis != r.axis:
                crossing |= np.abs(a2) < r2.half_width + r2.sidewalk
        if r.median:
            ground[outer(r, np.abs(a) < 1.0, ~crossing)] = C["other_flat"]
        dash = dashes & ~crossing
        lines = [0.0] if not r.median else []
        lines += [sign * (LANE + (1.0 if r.median else 0.0)) for sign in (-1, 1)] if r.lanes == 2 else []
        for off in lines:
            paint |= outer(r, np.abs(a - off) < 0.08, dash)
        for sign in (-1, 1):  # solid edge lines of the carriageway
            paint |= outer(r, np.abs(a - sign * r.carriage_half) < 0.08, ~crossing)
    return ground, paint & (ground == C["driveable_surface"])


def _fill_blocks(b: _Builder, lay: _Layout, ground: np.ndarray) -> None:
    """Each block between roads becomes buildings (and walls), a park, or a parking lot."""
    rng = b.rng
    n = ground.shape[0]
    X, Y = np.meshgrid((np.arange(n) + 0.5) * CELL, (np.arange(n) + 0.5) * CELL, indexing="ij")
    xb = [0.0] + lay.xs + [lay.extent]
    yb = [0.0] + lay.ys + [lay.extent]
    for i in range(len(xb) - 1):
        for j in range(len(yb) - 1):
            x0, x1 = lay.block_span(1, xb[i], xb[i + 1])
            y0, y1 = lay.block_span(0, yb[j], yb[j + 1])
            if x1 - x0 < 12 or y1 - y0 < 12:
                continue
            kind = rng.choice(["buildings", "park", "parking"], p=[0.6, 0.2, 0.2])
            if kind == "parking":
                gi = (X > x0) & (X < x1) & (Y > y0) & (Y < y1)
                ground[gi] = C["other_flat"]
                for row_y in np.arange(y0 + 4, y1 - 4, 7.0):
                    for cx in np.arange(x0 + 2, x1 - 2, 2.8):
                        if rng.random() < 0.55:
                            b.thing(C["car"], cx, row_y, np.pi / 2 + rng.choice([0, np.pi]) + rng.normal(0, 0.04))
                continue
            if kind == "park":
                for _ in range(int((x1 - x0) * (y1 - y0) / 120)):
                    b.tree(rng.uniform(x0 + 2, x1 - 2), rng.uniform(y0 + 2, y1 - 2))
                for edge in range(4):
                    if rng.random() < 0.5:
                        h = rng.uniform(0.7, 1.3)
                        if edge < 2:
                            yy = y0 + 0.6 if edge == 0 else y1 - 0.6
                            b.add(BOX, ((x0 + x1) / 2, yy, h / 2, (x1 - x0) / 2 - 1, 0.5, h / 2, 0), C["vegetation"])
                        else:
                            xx = x0 + 0.6 if edge == 2 else x1 - 0.6
                            b.add(BOX, (xx, (y0 + y1) / 2, h / 2, 0.5, (y1 - y0) / 2 - 1, h / 2, 0), C["vegetation"])
                if rng.random() < 0.5:
                    b.thing(
                        C["others"], rng.uniform(x0 + 2, x1 - 2), rng.uniform(y0 + 2, y1 - 2), rng.uniform(0, np.pi)
                    )
                continue
            # buildings along the four edges, a wall on some
            for edge in range(4):
                horizontal = edge < 2
                lo_, hi_ = (x0, x1) if horizontal else (y0, y1)
                if rng.random() < 0.15:
                    if horizontal:
                        yy = y0 + 0.2 if edge == 0 else y1 - 0.2
                        b.add(BOX, ((x0 + x1) / 2, yy, 1.1, (x1 - x0) / 2, 0.15, 1.1, 0), C["manmade"])
                    else:
                        xx = x0 + 0.2 if edge == 2 else x1 - 0.2
                        b.add(BOX, (xx, (y0 + y1) / 2, 1.1, 0.15, (y1 - y0) / 2, 1.1, 0), C["manmade"])
                    continue
                t = lo_ + rng.uniform(0, 4)
                while t < hi_ - 8:
                    w = min(rng.uniform(10, 30), hi_ - t)
                    depth = min(rng.uniform(8, 18), ((y1 - y0) if horizontal else (x1 - x0)) / 2 - 1)
                    h = rng.uniform(5, 28)
                    setback = rng.uniform(0, 3)
                    if horizontal:
                        cy = (y0 + setback + depth / 2) if edge == 0 else (y1 - setback - depth / 2)
                        b.add(BOX, (t + w / 2, cy, h / 2, w / 2, depth / 2, h / 2, 0), C["manmade"])
                    else:
                        cx = (x0 + setback + depth / 2) if edge == 2 else (x1 - setback - depth / 2)
                        b.add(BOX, (cx, t + w / 2, h / 2, depth / 2, w / 2, h / 2, 0), C["manmade"])
                    t += w + rng.uniform(0, 6)


def _furnish_roads(b: _Builder, lay: _Layout) -> None:
    """Along every road: kerbs, poles, trees, parked vehicles, construction zones, traffic, pedestrians."""
    rng = b.rng
    roads = lay.roads
    construction_roads = set(rng.choice(len(roads), size=min(2, len(roads)), replace=False).tolist())
    for ri, r in enumerate(roads):
        heading = 0.0 if r.axis == 0 else np.pi / 2
        edge = r.half_width + r.sidewalk
        # kerbs: a 15 cm step along both road edges, broken at the crossings
        cuts = [0.0]
        for p in lay.crossing_pos(r):
            other = lay.road_of[(1 - r.axis, p)]
            cuts += [p - other.half_width, p + other.half_width]
        cuts.append(lay.extent)
        for a, z in zip(cuts[::2], cuts[1::2]):
            if z - a < 1.0:
                continue
            for side in (-1, 1):
                cx, cy = lay.place(r, (a + z) / 2, side * (r.half_width + 0.15))
                hx, hy = ((z - a) / 2, 0.15) if r.axis == 0 else (0.15, (z - a) / 2)
                b.add(
                    BOX,
                    (cx, cy, 0.075, hx, hy, 0.075, 0.0),
                    C["sidewalk"],
                    color=np.array(BASE_COLORS[C["sidewalk"]]) * 0.9,
                )
        for s in np.arange(rng.uniform(5, 20), lay.extent - 5, rng.uniform(22, 34)):
            if lay.near_crossing(r, s, 2.0):
                continue
            for side in (-1, 1):
                if rng.random() < 0.7:
                    b.pole(*lay.place(r, s + side * 3, side * (edge - 0.4)), sign=rng.random() < 0.3)
                if rng.random() < 0.6:
                    b.tree(*lay.place(r, s + 12 + rng.normal(0, 2), side * (edge - 1.2)))
        # parked vehicles in the parking strips
        if r.parking:
            for side in (-1, 1):
                s = rng.uniform(0, 8)
                while s < lay.extent:
                    cls = rng.choice([C["car"], C["truck"], C["trailer"], C["bicycle"]], p=[0.86, 0.05, 0.04, 0.05])
                    if not lay.near_crossing(r, s, 6.0) and rng.random() < 0.6:
                        off = side * (r.carriage_half + PARKING / 2)
                        b.thing(
                            int(cls),
                            *lay.place(r, s, off),
                            heading + (0 if side < 0 else np.pi) + rng.normal(0, 0.03),
                            rider=False,
                        )
                    s += rng.uniform(5.5, 9)
        # a construction zone on two roads of every scene (cones, barriers, a construction vehicle)
        if ri in construction_roads:
            s0 = next((s for s in rng.uniform(40, lay.extent - 40, 20) if not lay.near_crossing(r, s, 15)), None)
            if s0 is not None:
                side = rng.choice([-1, 1])
                off = side * (r.carriage_half - 1.2)
                for k in range(8):
                    b.thing(C["traffic_cone"], *lay.place(r, s0 + 2.2 * k, off + side * 0.2 * (k % 2)), 0.0)
                for k in range(3):
                    b.thing(C["barrier"], *lay.place(r, s0 + 3 + 5 * k, off - side * 1.1), heading)
                b.thing(
                    C["construction_vehicle"], *lay.place(r, s0 + 8, off + side * 1.5), heading + rng.normal(0, 0.2)
                )
        # moving traffic in the driving lanes
        for direction in (1, -1):
            for lane in range(r.lanes):
                off = -direction * ((1.0 if r.median else 0.0) + LANE * (lane + 0.5))  # drive on the right
                s = rng.uniform(0, 30)
                while s < lay.extent:
                    cls = int(
                        rng.choice(
                            [C["car"], C["truck"], C["bus"], C["motorcycle"], C["bicycle"]],
                            p=[0.72, 0.1, 0.06, 0.06, 0.06],
                        )
                    )
                    speed = rng.uniform(6, 11) if cls not in (C["bicycle"],) else rng.uniform(3, 5)
                    lateral = off + (
                        direction * 1.0 if cls in (C["bicycle"], C["motorcycle"]) and lane == r.lanes - 1 else 0
                    )
                    b.thing(
                        cls,
                        *lay.place(r, s, lateral),
                        heading + (0 if direction > 0 else np.pi),
                        speed,
                        rider=cls in (C["bicycle"], C["motorcycle"]),
                    )
                    s += rng.uniform(18, 45)
        # pedestrians and bins on the sidewalks
        for side in (-1, 1):
            for s in rng.uniform(0, lay.extent, int(lay.extent / 12)):
                off = side * (r.half_width + rng.uniform(0.5, r.sidewalk - 0.5))
                if rng.random() < 0.85:
                    walking = rng.random() < 0.6
                    b.thing(
                        C["pedestrian"],
                        *lay.place(r, s, off),
                        heading + rng.choice([0, np.pi]),
                        rng.uniform(1.0, 1.6) if walking else 0.0,
                    )
                else:
                    b.thing(C["others"], *lay.place(r, s, off), heading)


def _ego_route(b: _Builder, lay: _Layout, route_length: float) -> tuple[np.ndarray, float, float]:
    """A lane of a random road, a direction and a speed; objects that would meet the ego are removed.
    Returns the start (2,), yaw and speed."""
    rng = b.rng
    road = lay.roads[int(rng.integers(len(lay.roads)))]
    direction = int(rng.choice([1, -1]))
    speed = float(rng.uniform(5.0, 8.0))
    lane_off = -direction * (
        (1.0 if road.median else 0.0) + LANE * 0.5 + (LANE if road.lanes == 2 and rng.random() < 0.5 else 0)
    )
    s0 = rng.uniform(60, lay.extent - 60 - route_length)
    if direction < 0:
        s0 = s0 + route_length
    start = np.array(lay.place(road, s0, lane_off))
    yaw = (0.0 if road.axis == 0 else np.pi / 2) + (0 if direction > 0 else np.pi)
    # clear the ego's lane of objects near its path, so that nothing drives through the ego
    ego_dir = np.array([np.cos(yaw), np.sin(yaw)])
    kept = []
    for ob in b.objects:
        rel = ob.p0 - start
        lateral = abs(rel[0] * -ego_dir[1] + rel[1] * ego_dir[0])
        same_lane = lateral < LANE / 2 + 0.3
        if same_lane and ob.speed > 0:
            continue  # in the ego lane, moving: would meet the ego
        if same_lane and -10 < rel @ ego_dir < route_length + 20:
            continue
        kept.append(ob)
    b.objects = kept
    return start, float(yaw), speed


def generate_world(seed: int, extent: float = 360.0, route_length: float = 30.0) -> World:
    """One scene. `route_length`: metres the ego drives (the route is kept inside the scene)."""
    rng = np.random.default_rng(seed)
    lay = _Layout(_lay_roads(rng, extent), extent)
    ground, paint = _paint_ground(lay.roads, extent)
    b = _Builder(rng)
    _fill_blocks(b, lay, ground)  # may pave parking lots into the ground raster
    _furnish_roads(b, lay)
    start, yaw, speed = _ego_route(b, lay, route_length)
    world = World(
        extent=extent,
        roads=lay.roads,
        ground=ground,
        paint=paint,
        static=b.primitives(),
        objects=b.objects,
        ego_start=start,
        ego_yaw=yaw,
        ego_speed=speed,
        seed=seed,
    )
    world.stats = {"roads": len(lay.roads), "static primitives": len(world.static), "objects": len(world.objects)}
    return world
