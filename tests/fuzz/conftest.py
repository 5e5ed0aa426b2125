"""Fuzzing every input a user or a suspect controls (issue: a verdict nobody can fake).

The property, checked by :func:`check` on every generated case: the command ends with a valid result, or with exit 2
and one ``charex: error:`` line and no traceback; within a time bound; with nothing half-written. Inputs that are
invalid by construction must end in exit 2, never in a verdict (0, 1) or "uncalibrated" (3).

Budgets: the default test command runs the ``ci`` profile (a few dozen cases per surface); ``make fuzz`` runs the
``fuzz`` profile (``--hypothesis-profile fuzz``: 1,500 cases per test, over 10,000 in all). Failing examples that
fuzzing found are kept as ``@example`` regression cases beside the test that found them.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from charex import calibrate, generate, load_model
from charex.cli import main
from charex.models import save_model
from charex.types import GenerationConfig

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                     HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=30, **_COMMON)
settings.register_profile("fuzz", max_examples=1500, **_COMMON)
settings.register_profile("deep", max_examples=300, **_COMMON)  # between the two, for development
settings.load_profile("ci")

TIME_BOUND_S = 20.0  # per case; the slowest honest case (a remote verify with retries off) takes well under 1 s


def run(argv: list[str]) -> tuple[int, str, str, float]:
    """``charex ARGV`` in-process: (exit code, stdout, stderr, seconds)."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def check(argv: list[str], *, invalid: bool = False, outputs: tuple[Path, ...] = ()) -> tuple[int, str]:
    """Run ``argv`` and assert the contract; returns (exit code, stdout)."""
    rc, out, err, secs = run(argv)
    assert rc in (0, 1, 2, 3), (argv, rc, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert secs < TIME_BOUND_S, (argv, secs)
    if rc == 2:
        errors = [line for line in err.splitlines() if line.startswith("charex: error: ")]
        assert len(errors) == 1, err
    if invalid:
        assert rc == 2, (argv, rc, out[:300], err[:300])
    for p in outputs:  # nothing half-written: no temp files beside an output
        leftovers = [f.name for f in p.parent.glob(f".{p.name}*")] if p.parent.exists() else []
        assert not leftovers, leftovers
    return rc, out


class World(dict):
    """The fixtures' files and bytes; a short repr keeps hypothesis' failure reports readable."""

    def __repr__(self) -> str:
        return "world"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small calibrated fingerprint of bundled:base, a suspect model file and the answers of that suspect."""
    d = tmp_path_factory.mktemp("fuzz")
    base = load_model("bundled:base")
    fp = generate(base, GenerationConfig(n=12, steps=5, dtype="float32"))
    cal = calibrate(fp, [load_model("bundled:independent-1"), load_model("bundled:independent-2")])
    cal.save(d / "cal.safetensors")
    fp.save(d / "uncal.safetensors")
    suspect = load_model("bundled:derived-pruned90")
    save_model(suspect, d / "suspect.safetensors")
    from charex.judge.verify import predict

    labels = predict(suspect, cal.pixels()).tolist()
    return World({"dir": d, "cal": d / "cal.safetensors", "uncal": d / "uncal.safetensors", "fp": cal,
            "suspect": d / "suspect.safetensors", "labels": labels,
            "cal_bytes": (d / "cal.safetensors").read_bytes(), "suspect_bytes": (d / "suspect.safetensors").read_bytes()})
