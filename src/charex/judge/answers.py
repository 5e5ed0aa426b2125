"""Answers collected elsewhere: the labels a system you cannot open gave to the exported examples.

A file holds one answer per line, as CSV with the header ``file,label`` or as JSON lines with those two keys:
``file`` is the PNG name ``charex export`` wrote (``0007.png``, a path ending in it is accepted) or the example
index (``7``); ``label`` is a class index or a class name of the fingerprint's classes. A subset of the
examples may be answered (the test then uses what was answered); an example answered twice, a file that is
not one of the examples, a label that is not a class, an empty file or a row without both fields is an error.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator

from .._io import read_utf8
from ..errors import CharexError
from typing import TYPE_CHECKING

from ..fingerprint import FingerprintSet, with_repeats  # noqa: F401  (with_repeats: its place before)

if TYPE_CHECKING:
    from .kit import Kit

_PNG = re.compile(r"^([0-9]{1,18})\.png$", re.IGNORECASE)
_INT = re.compile(r"-?[0-9]{1,18}")  # longer is no index or class (and int() would refuse 4300+ digits)


def read_answers(path: str | Path, fp: FingerprintSet | Kit, any_labels: bool = False) -> dict[int, int]:
    """:func:`read_labelled` in the base's classes, or (``any_labels``) in the suspect's own labels: the answers."""
    return read_labelled(path, fp, "any" if any_labels else "base")[0]


def read_labelled(path: str | Path, fp: FingerprintSet | Kit, labels: str = "base") -> tuple[dict[int, int], bool]:
    """Example index -> answered class index, read from a CSV or JSON-lines answers file.

    Args:
        path: ``.csv`` (header ``file,label``) or ``.jsonl``/``.ndjson`` (``{"file": ..., "label": ...}`` per line).
        fp: the fingerprint or kit the answers are to (its ``n`` and class names check the file; a kit's queries
            are numbered across its tests, as ``charex export`` wrote them).
        labels: ``base``: each label is a class index or name of the base (else an error); ``any``: the answers are
            in another label space (a suspect on another task): any label text is taken, numbered by first
            appearance (only which answers are equal counts: the pair test); ``auto``: ``base`` when every label is
            one of the base's classes, else ``any``.

    Returns:
        (example index -> answered class index, whether the answers are in the base's label space).

    Raises:
        CharexError: naming the file, the line and the problem.

    Example:
        >>> answers = read_answers("answers.csv", fp)  # doctest: +SKIP
        >>> len(answers), answers[0]  # doctest: +SKIP
        (100, 3)
    """
    p = Path(path)
    if not p.is_file():
        raise CharexError(f"answers file not found: {p}")
    meta = fp.meta if isinstance(fp, FingerprintSet) else fp.classes
    classes = [str(c) for c in (meta.get("classes") or [])]
    num_classes = int(meta.get("num_classes") or len(classes) or 0)
    if labels not in ("base", "any", "auto"):
        raise CharexError(f"labels must be base, any or auto, got {labels!r}")
    out: dict[int, int] = {}
    raw: dict[int, tuple[Any, str]] = {}  # what auto and any map once the whole file is read
    own: str | None = None
    for line, row in _rows(p):
        where = f"{p}, line {line}"
        if row.get("kit") not in (None, ""):  # audit logs name the kit (or fingerprint) they answered
            own = own or (fp.digest if isinstance(fp, FingerprintSet) else fp.id)
            if row["kit"] != own:
                raise CharexError(f"{where}: these answers were collected for another kit or fingerprint "
                                  f"({str(row['kit'])[:16]}..., this one is {own[:16]}...)")
        file, label = row.get("file"), row.get("label")
        if file in (None, "") or label in (None, ""):
            raise CharexError(f"{where}: every answer needs both 'file' and 'label', got {row}")
        idx = _example(str(file), fp.n, where)
        if idx in out or idx in raw:
            raise CharexError(f"{where}: example {idx} ({file}) is answered twice")
        if labels == "base":
            out[idx] = _label(label, classes, num_classes, where)
        else:
            raw[idx] = (label, where)
    if not out and not raw:
        raise CharexError(f"{p} holds no answers")
    if labels == "base":
        return out, True
    if labels == "auto":
        try:  # _label fails only for a label that is not one of the base's classes
            return {i: _label(lab, classes, num_classes, where) for i, (lab, where) in raw.items()}, True
        except CharexError:
            pass
    own_labels: dict[str, int] = {}
    return {i: own_labels.setdefault(str(lab).strip(), len(own_labels)) for i, (lab, _) in raw.items()}, False


def _rows(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = read_utf8(p, "answers file")
    if "\0" in text:
        raise CharexError(f"{p} holds NUL characters: not a text answers file")
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CharexError(f"{p}, line {i}: not JSON ({e.msg})") from None
            except RecursionError:
                raise CharexError(f"{p}, line {i}: JSON nested too deeply") from None
            if not isinstance(obj, dict):
                raise CharexError(f"{p}, line {i}: expected an object with 'file' and 'label'")
            yield i, obj
        return
    reader = csv.DictReader(text.splitlines())
    try:
        if reader.fieldnames is None:
            raise CharexError(f"{p} is empty")
        if not {"file", "label"} <= set(reader.fieldnames):
            raise CharexError(f"{p}: the CSV header must name 'file' and 'label', got {reader.fieldnames}")
        for i, row in enumerate(reader, 2):
            yield i, row
    except csv.Error as e:
        raise CharexError(f"{p}, line {reader.line_num}: not valid CSV ({e})") from None


def _example(file: str, n: int, where: str) -> int:
    name = file.replace("\\", "/").rsplit("/", 1)[-1]
    m = _PNG.match(name)
    if m:
        idx = int(m.group(1))
    elif _INT.fullmatch(name) and not name.startswith("-"):
        idx = int(name)
    else:
        raise CharexError(f"{where}: {file!r} is neither an exported file name (NNNN.png) nor an example index")
    if not 0 <= idx < n:
        raise CharexError(f"{where}: {file!r} is not one of this fingerprint's {n} examples")
    return idx


def _label(label: Any, classes: list[str], num_classes: int, where: str) -> int:
    text = str(label).strip()
    if text in classes:
        return classes.index(text)
    if not isinstance(label, bool) and _INT.fullmatch(text):
        v = int(text)
        if 0 <= v < num_classes:
            return v
        raise CharexError(f"{where}: class index {v} is outside [0, {num_classes})")
    known = ", ".join(classes) if classes else f"indices 0..{num_classes - 1}"
    raise CharexError(f"{where}: {label!r} is not a class of this fingerprint ({known})")
