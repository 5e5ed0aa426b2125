"""The paper's published Table 2 (CIFAR-10 uniqueness in percent at 80/90/95% pruning), for comparison."""

from __future__ import annotations

# (method label, delta) -> (transferability, U80, U90, U95); base is 100 everywhere in the paper.
PAPER_TABLE2: dict[tuple[str, float], tuple[int, int, int, int]] = {
    ("vanilla C", 0.0): (68, 17, 5, -30),
    ("RC", 0.01): (74, 26, 18, -5), ("RC", 0.03): (78, 22, 16, 2), ("RC", 0.05): (94, 6, 6, 3), ("RC", 0.07): (96, 4, 4, 2),
    ("LTRC k=1", 0.0): (59, 39, 20, -5), ("LTRC k=1", 0.01): (64, 35, 18, -9), ("LTRC k=1", 0.03): (78, 21, 15, 1),
    ("LTRC k=1", 0.05): (80, 11, 6, -9), ("LTRC k=1", 0.07): (83, 10, 5, -3),
    ("LTRC k=2", 0.0): (28, 42, 40, 35), ("LTRC k=2", 0.01): (31, 48, 44, 38), ("LTRC k=2", 0.03): (51, 49, 48, 43),
    ("LTRC k=2", 0.05): (61, 39, 36, 35), ("LTRC k=2", 0.07): (69, 31, 31, 30),
    ("LTRC k=3", 0.0): (36, 20, 19, 15), ("LTRC k=3", 0.01): (39, 25, 21, 17), ("LTRC k=3", 0.03): (60, 15, 13, 9),
    ("LTRC k=3", 0.05): (71, 13, 9, 4), ("LTRC k=3", 0.07): (75, 12, 9, -3),
}


def method_label(method: str, k: int = 0) -> str:
    """The paper's row label of a method."""
    return {"vanilla": "vanilla C", "rc": "RC", "rcgm": "RC+GM"}.get(method, f"LTRC k={k}")
