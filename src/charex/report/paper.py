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

# ImageNet (VGG-16 base, VGG-19 other): (method label, delta) -> (transferability, U40, U50, U60, U70, U80).
PAPER_TABLE1: dict[tuple[str, float], tuple[int, ...]] = {
    ("vanilla C", 0.0): (47, 13, 13, 13, -5, -22),
    ("RC", 0.001): (60, 30, 30, 23, 22, 0), ("RC", 0.003): (88, 6, 11, 5, 2, -3),
    ("RC", 0.005): (86, 12, 12, 12, 9, 2), ("RC", 0.007): (95, 4, 4, 3, 2, 3),
    ("RC+GM", 0.001): (55, 34, 37, 35, 23, -7), ("RC+GM", 0.003): (67, 30, 38, 38, 21, 19),
    ("RC+GM", 0.005): (85, 15, 15, 15, 15, 15), ("RC+GM", 0.007): (100, 0, 0, 0, 0, 0),
    ("LTRC k=20", 0.0): (16, 53, 51, 50, 23, 13), ("LTRC k=20", 0.001): (24, 65, 65, 65, 58, 32),
    ("LTRC k=20", 0.003): (75, 25, 25, 25, 25, 23), ("LTRC k=20", 0.005): (96, 4, 4, 4, 4, 3),
    ("LTRC k=20", 0.007): (98, 2, 2, 2, 2, 2),
}


def paper_table(dataset: str) -> dict[tuple[str, float], tuple[int, ...]]:
    """The published table of a dataset (``cifar10``: Table 2, ``imagenet``: Table 1)."""
    return PAPER_TABLE1 if dataset == "imagenet" else PAPER_TABLE2
