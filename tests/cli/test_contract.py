"""One exit-code contract for every command: 0 derived/success, 1 only for a measured "not derived" (or a failed
audit check), 2 for any error, 3 uncalibrated. Failures of every type are injected into every subcommand (the list
comes from the parser, so a new command is covered without editing this file)."""

import importlib
import json
import sys

import pytest

from charex.cli import build_parser, main
from charex.errors import CharexError


def subcommands():
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices.items())


def minimal_argv(name, sp):
    """Arguments that parse for subcommand ``name``: every required positional and option, with a first choice."""
    argv = [name]
    for a in sp._actions:
        if a.dest == "help" or not (a.required or not a.option_strings):
            continue
        if a.nargs == "*":
            continue
        value = str(next(iter(a.choices))) if a.choices else "x"
        argv += ([a.option_strings[0]] if a.option_strings else []) + [value]
    return argv


FAILURES = [CharexError("bad input named here"), ValueError("v"), KeyError("k"), TypeError("t"), IndexError("i"),
            ZeroDivisionError("z"), AttributeError("a"), AssertionError(), RuntimeError("r"), OSError(5, "io"),
            MemoryError(), RecursionError("deep"), NotImplementedError(), StopIteration(),
            UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), json.JSONDecodeError("j", "x", 0),
            SystemExit(1), SystemExit(0), KeyboardInterrupt()]


@pytest.mark.parametrize("name, sp", subcommands(), ids=[n for n, _ in subcommands()])
def test_any_failure_in_any_command_is_exit_2_with_one_line(name, sp, monkeypatch, capsys) -> None:
    func = sp.get_default("func")
    module = importlib.import_module(func.__module__)
    argv = minimal_argv(name, sp)
    for exc in FAILURES:
        def boom(args, exc=exc):
            raise exc
        monkeypatch.setattr(module, func.__name__, boom)
        assert main(argv) == 2, (name, exc)
        err = capsys.readouterr().err
        assert err.startswith("charex: error: ") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert main(argv + ["--debug"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and type(exc).__name__ in err, (name, exc)


def test_environment_variable_shows_the_traceback(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys.modules["charex.cli.fingerprints"], "cmd_inspect", lambda a: 1 / 0)
    monkeypatch.setenv("CHAREX_DEBUG", "1")
    assert main(["inspect", "x"]) == 2 and "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("code", [None, 4, -1, "0", 1.5])
def test_a_command_returning_outside_the_contract_is_an_error(code, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys.modules["charex.cli.fingerprints"], "cmd_inspect", lambda a: code)
    assert main(["inspect", "x"]) == 2 and "internal" in capsys.readouterr().err


def test_binary_answers_file_is_an_error_not_an_acquittal(calibrated, tmp_path, capsys) -> None:
    """Regression: a non-UTF-8 answers file ended in a traceback and exit 1 (= "not derived")."""
    for name, raw in [("a.csv", b"file,label\n\xff\xfe\x00\x01garbage"), ("a.jsonl", b"\x80\x81\x82"),
                      ("nul.csv", b"file,label\n0000.png,\x003\n"), ("q.csv", b'file,label\n"0000.png,3\n')]:
        (tmp_path / name).write_bytes(raw)
        assert main(["verify", str(calibrated), "--answers", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("charex: error: ") and "Traceback" not in err and name in err


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, model_files):
    d = tmp_path_factory.mktemp("contract")
    assert main(["generate", str(model_files["base"]), "--n", "12", "--steps", "5", "--quiet",
                 "-o", str(d / "fp.safetensors")]) == 0
    assert main(["calibrate", str(d / "fp.safetensors"), "--reference", str(model_files["ind1"]),
                 str(model_files["ind2"]), "-o", str(d / "cal.safetensors")]) == 0
    return d / "cal.safetensors"
