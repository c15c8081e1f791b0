"""Plane geometry helpers: an example corpus for the code-retrieval probe."""

from __future__ import annotations

import math


def distance_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Euclidean distance between the points ``a`` and ``b``."""
    dx = b[0] - a[0]
    dy = b[1] - a[1]
    return math.hypot(dx, dy)


def polygon_area(points: list[tuple[float, float]]) -> float:
    """Area of a simple polygon given its corners in order (the shoelace formula)."""
    twice_area = 0.0
    for index, (x1, y1) in enumerate(points):
        x2, y2 = points[(index + 1) % len(points)]
        twice_area += x1 * y2 - x2 * y1
    return abs(twice_area) / 2.0


def circle_circumference(radius: float) -> float:
    """Length of the boundary of a circle of the given ``radius``."""
    if radius < 0:
        raise ValueError("a radius cannot be negative")
    return 2.0 * math.pi * radius


def midpoint_of(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """The point halfway between ``a`` and ``b``."""
    half_x = (a[0] + b[0]) / 2.0
    half_y = (a[1] + b[1]) / 2.0
    return (half_x, half_y)


def rotate_point(point: tuple[float, float], degrees: float) -> tuple[float, float]:
    """``point`` turned anticlockwise about the origin by ``degrees``."""
    theta = math.radians(degrees)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    return (point[0] * cos_t - point[1] * sin_t, point[0] * sin_t + point[1] * cos_t)


def bounding_box(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    """The smallest axis-aligned box holding ``points``: (min_x, min_y, max_x, max_y)."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (min(xs), min(ys), max(xs), max(ys))


def triangle_is_right(a: float, b: float, c: float, tolerance: float = 1e-9) -> bool:
    """Whether sides ``a``, ``b`` and ``c`` form a right triangle."""
    short1, short2, longest = sorted((a, b, c))
    gap = short1**2 + short2**2 - longest**2
    return abs(gap) <= tolerance * max(longest**2, 1.0)
