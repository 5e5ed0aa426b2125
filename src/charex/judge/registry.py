"""Every kind of test a kit can hold, registered once by its kit key (:mod:`charex.judge.protocol`).

A query set (a :class:`~charex.fingerprint.FingerprintSet` in a kit or a file) is the first kind here that
``holds`` it (the count test last: it takes every set no other kind claims); a test that reads the suspect instead
of asking it (0 queries) is stored under its kit key in the kit's header. Adding a test is one line here.
"""

from __future__ import annotations

from typing import Any

from ..errors import CharexError
from ..fingerprint import FingerprintSet
from .examples import ExampleTest
from .mistakes import MistakeTest
from .pairs import PairTest
from .updates import UpdateTest
from .weights import WeightTest

KINDS: tuple[Any, ...] = (
    WeightTest,
    UpdateTest,
    PairTest,
    MistakeTest,
    ExampleTest,
)
READING = tuple(k for k in KINDS if k.n == 0)  # the kinds that read the suspect: stored in the kit's header


def test_for(fp: FingerprintSet) -> Any:
    """The test a query set is: the first kind of :data:`KINDS` that holds it; its calibration block must be one
    that kind writes (``nulls``, default its kit key), else an error naming both."""
    cls = next(kind for kind in KINDS if kind.holds(fp))
    null = (fp.calibration or {}).get("null")
    if fp.calibration is not None and null not in getattr(cls, "nulls", (cls.kind,)):
        raise CharexError(f"a {cls.kind} set holds a calibration block of another kind (null {null!r:.20}): "
                          "recalibrate it")
    return cls(fp)


def kind(key: str) -> Any:
    """The class of the test of kit key ``key`` (a baseline's count test: the count test)."""
    return next((k for k in KINDS if k.kind == key), ExampleTest)
