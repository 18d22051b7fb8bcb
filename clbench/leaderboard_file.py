"""The leaderboard CSV on disk: its schema, locked appends that write a whole row at once, and a
reader that skips (and reports) a malformed line instead of failing.

Every row is one line (cells never hold a line break), so a line is the unit of damage: a torn
line from a killed writer or a hand edit costs that line only. The lock is `flock` on the CSV
file itself, so no lock file is left beside it."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from clbench.errors import ClbenchError
from clbench.files import AtomicFile

DEFAULT_PATH = Path("leaderboard") / "leaderboard.csv"

COLUMNS = (
    "run_id", "created_at", "scenario", "scenario_fingerprint", "setting_id", "scenario_overrides", "protocol",
    "learner", "learner_config", "backbone", "weights", "init_set", "seed", "n_experiences",
    "final_accuracy", "average_incremental_accuracy", "forgetting", "backward_transfer", "forward_transfer",
    "final_seen_accuracy", "fewshot_accuracy", "fewshot_ci95", "fscil_average", "fscil_drop", "base_accuracy",
    "novel_accuracy", "chance_accuracy", "final_class_il_accuracy", "final_task_il_accuracy", "accuracy_matrix",
    "accuracy_curve", "untrained_accuracy", "client_accuracy", "class_il_matrix", "task_il_matrix", "training_log",
    "train_seconds", "eval_seconds", "feature_seconds", "feature_cache", "samples_per_second",
    "peak_memory_mb", "state_mb", "n_parameters", "device", "precision", "torch_version", "clbench_version",
    "cpu", "torch_threads", "deterministic", "code_revision", "source_hash", "status",
)
"""The documented column order (leaderboard/README.md says what each holds). Readers go by header
name, so older files with fewer or reordered columns still read; appending to such a file first
rewrites it to this order (its extra columns kept at the end)."""

IDENTITY_COLUMNS = ("scenario", "scenario_fingerprint", "learner", "seed")
"""A CSV whose header lacks one of these is not a leaderboard: it is never appended to."""

NUMERIC_COLUMNS = (
    "seed", "n_experiences", "final_accuracy", "final_seen_accuracy", "average_incremental_accuracy", "forgetting",
    "backward_transfer", "forward_transfer", "fewshot_accuracy", "fewshot_ci95", "fscil_average", "fscil_drop",
    "base_accuracy", "novel_accuracy", "chance_accuracy", "final_class_il_accuracy", "final_task_il_accuracy",
    "train_seconds", "eval_seconds", "feature_seconds", "samples_per_second",
    "peak_memory_mb", "state_mb", "n_parameters", "torch_threads",
)
JSON_COLUMNS = {  # column -> the JSON type its cell must hold (null allowed where a run has no such value)
    "scenario_overrides": (dict,), "learner_config": (dict,), "accuracy_matrix": (list,),
    "accuracy_curve": (list,), "untrained_accuracy": (list, type(None)), "client_accuracy": (list, type(None)),
    "class_il_matrix": (list, type(None)), "task_il_matrix": (list, type(None)), "training_log": (dict,),
    "deterministic": (bool,),
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"
_HEAD_BYTES = 1 << 16
_SHOWN_PROBLEMS = 5


def default_path() -> Path:
    """`$CLBENCH_LEADERBOARD`, else `leaderboard/leaderboard.csv` under the current directory."""
    return Path(os.environ.get("CLBENCH_LEADERBOARD", DEFAULT_PATH))


def set_aside_path(path: Path) -> Path:
    """Where lines that an append had to remove (a torn last line; unreadable lines of a rewritten
    older file) are kept, verbatim: `<leaderboard>.malformed`."""
    return path.with_name(path.name + ".malformed")


def check_writable(path: Path) -> None:
    """Fail early, in one line, if rows could not be appended to `path`: a folder, an unwritable
    place, or an existing file that is not a clbench leaderboard."""
    target = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if path.exists() and path.is_dir():
        raise ClbenchError(f"leaderboard path {path} is a directory; give a .csv file path")
    if not os.access(target, os.W_OK) or (not path.exists() and not target.is_dir()):
        raise ClbenchError(f"cannot write the leaderboard at {path}: {target} is not writable")
    if path.exists():
        with _locked(path, exclusive=False) as fd:
            _header(os.pread(fd, _HEAD_BYTES, 0), path)


def _cell(value: Any) -> str:
    """Text of one cell: NaN is empty, a line break becomes a space (a row is one line), and a
    string that a spreadsheet would run as a formula (or that begins with the quote marking one)
    gets a leading `'`, which `read` removes again."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    text = str(value).replace("\r", " ").replace("\n", " ")
    if isinstance(value, str) and value.startswith(_FORMULA_START + (_QUOTE,)):
        return _QUOTE + text
    return text


def _uncell(text: str) -> str:
    """The value a cell was written from: without the `'` that `_cell` put before a formula."""
    return text[1:] if text.startswith(_QUOTE) else text


def _cells(row: dict[str, Any]) -> dict[str, str]:
    unknown = [column for column in row if column not in COLUMNS]
    if unknown:
        raise ClbenchError(f"a leaderboard row has unknown column(s) {', '.join(map(repr, unknown))}; "
                           f"the columns are clbench.leaderboard.COLUMNS")
    record = {column: _cell(value) for column, value in row.items()}
    problem = _problem({column: _uncell(text) for column, text in record.items()})
    if problem:
        raise ClbenchError(f"refusing to append a malformed leaderboard row: {problem}")
    return record


def _lines(records: list[dict[str, str]], columns: tuple[str, ...], header: bool) -> bytes:
    """CSV lines of records whose cells are already text (a missing cell is empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for record in records:
        writer.writerow([record.get(c, "") for c in columns])
    return buffer.getvalue().encode("utf-8")


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[int]:
    """An open descriptor of `path` holding `flock` (exclusive: read-write, created if missing;
    else shared, read-only). A writer that replaced the file while we waited (a rewrite renames
    a new file onto the path) leaves us holding the old inode: then reopen and lock again."""
    import fcntl  # POSIX; imported here so that the rest of the module loads anywhere

    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND if exclusive else os.O_RDONLY
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise ClbenchError(f"cannot open the leaderboard {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino, current.st_dev) == os.fstat(fd)[1:3]:
                yield fd
                return
        finally:
            os.close(fd)  # closing releases the lock


def _content(fd: int) -> bytes:
    """The whole file (nobody writes while we hold the lock)."""
    return os.pread(fd, os.fstat(fd).st_size, 0)


def _header(content: bytes, path: Path) -> list[str] | None:
    """The header of a leaderboard file (None if it is empty); anything else is refused in one line."""
    if not content.strip():
        return None
    first = content.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        header = next(csv.reader([first.decode("utf-8-sig")], strict=True), [])
        problem = f"its header lacks {', '.join(c for c in IDENTITY_COLUMNS if c not in header)}"
    except (UnicodeDecodeError, csv.Error):
        header, problem = [], "it is not UTF-8 CSV text"
    if any(c not in header for c in IDENTITY_COLUMNS):
        raise ClbenchError(f"{path} is not a clbench leaderboard ({problem}); give another --leaderboard path")
    return header


def _parse_line(raw: bytes, header: list[str]) -> tuple[dict[str, str] | None, str]:
    """The record of one data line, or None and what is wrong with it."""
    try:
        text = raw.rstrip(b"\r").decode("utf-8")
        cells = next(csv.reader([text], strict=True))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except csv.Error as exc:
        return None, f"broken quoting ({exc})"
    if len(cells) != len(header):
        return None, f"{len(cells)} cells, the header has {len(header)}"
    record = {column: _uncell(cell) for column, cell in zip(header, cells)}
    problem = _problem(record)
    return (None, problem) if problem else (record, "")


def _problem(record: dict[str, str]) -> str:
    """What is wrong with a record of cell texts against the schema ("" if nothing): an empty
    identity cell, a numeric cell that is not a number, a JSON cell of the wrong kind."""
    empty = [column for column in IDENTITY_COLUMNS if column in record and not record[column].strip()]
    if empty:
        return f"{empty[0]} is empty"
    for column in NUMERIC_COLUMNS:
        value = record.get(column, "")
        try:
            float(value or "nan")
        except ValueError:
            return f"{column} holds {value[:20]!r}, not a number"
    for column, kinds in JSON_COLUMNS.items():
        value = record.get(column, "")
        try:
            if value and not isinstance(json.loads(value), kinds):
                raise ValueError
        except ValueError:
            return f"{column} is not a JSON {kinds[0].__name__}"
    return ""


def _records(content: bytes, header: list[str]) -> tuple[list[dict[str, str]], list[tuple[int, bytes, str]]]:
    """Every well-formed data line as a record, and (line number, bytes, problem) of the others."""
    records, bad = [], []
    for number, raw in enumerate(content.split(b"\n")[1:], start=2):
        if not raw.strip():
            continue
        record, problem = _parse_line(raw, header)
        if record is None:
            bad.append((number, raw, problem))
        else:
            records.append(record)
    return records, bad


def _describe(bad: list[tuple[int, bytes, str]]) -> str:
    shown = "; ".join(f"line {n}: {problem}" for n, _, problem in bad[:_SHOWN_PROBLEMS])
    more = f"; and {len(bad) - _SHOWN_PROBLEMS} more" if len(bad) > _SHOWN_PROBLEMS else ""
    return f"{shown}{more}"


def read(path: str | os.PathLike) -> pd.DataFrame:
    """All well-formed rows, by header name, in the documented column order (extra columns of
    older files at the end). Empty cells are NaN; numeric columns are numbers; JSON cells stay
    strings (see `leaderboard.recompute_metrics`). A malformed line is skipped with one warning
    that gives its line number; nothing on disk changes."""
    path = Path(path)
    if not path.exists():
        raise ClbenchError(f"no leaderboard at {path} (run `clbench run` first, or pass --leaderboard PATH)")
    if path.is_dir():
        raise ClbenchError(f"leaderboard path {path} is a directory; give a .csv file path")
    with _locked(path, exclusive=False) as fd:
        content = _content(fd)
    header = _header(content, path)
    if header is None:
        raise ClbenchError(f"the leaderboard {path} is empty (run `clbench run` to add rows)")
    records, bad = _records(content, header)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} malformed line(s): {_describe(bad)}")
    frame = pd.DataFrame(records, columns=header, dtype=object).replace("", float("nan"))
    for column in NUMERIC_COLUMNS:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column])
    return frame.reindex(columns=list(COLUMNS) + [c for c in header if c not in COLUMNS])


def append_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Append `rows` to the leaderboard at `path` (created if missing) in one write, under an
    exclusive lock: safe with several processes appending at once. Before writing, a torn last
    line is completed or set aside, and an older file is rewritten to the current column order;
    a file that is not a leaderboard is refused and left untouched."""
    path = Path(path)
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, exclusive=True) as fd:
        size = os.fstat(fd).st_size
        header = _header(os.pread(fd, _HEAD_BYTES, 0), path)
        cells = [_cells(row) for row in rows]
        if header is None:  # a new (or blank) file
            os.ftruncate(fd, 0)
            _write_all(fd, path, 0, _lines(cells, COLUMNS, header=True))
        elif tuple(header[: len(COLUMNS)]) != COLUMNS:
            _rewrite(path, _content(fd), header, cells)
        else:
            start = _repair_tail(fd, path, size, header)
            _write_all(fd, path, start, _lines(cells, tuple(header), header=False))


def _last_line(fd: int, size: int) -> tuple[bytes, bool]:
    """The bytes after the file's last line end (b"" when it ends with one), read backwards from
    the end so that an append costs the same however long the file is; and whether they are the
    first line (no line end at all)."""
    end, tail = size, b""
    while end > 0:
        start = max(0, end - _HEAD_BYTES)
        tail = os.pread(fd, end - start, start) + tail
        cut = tail.rfind(b"\n")
        if cut >= 0:
            return tail[cut + 1:], False
        end = start
    return tail, True


def _repair_tail(fd: int, path: Path, size: int, header: list[str]) -> int:
    """Make the file end at a line end, and return its size: a last line without its newline is
    kept if it is the header or a whole row, else (a write cut short) moved to `set_aside_path`."""
    tail, first = _last_line(fd, size)
    if not tail:
        return size
    if first or _parse_line(tail, header)[0] is not None:
        os.write(fd, b"\n")
        return size + 1
    _set_aside(path, [tail], "an incomplete last line (a write cut short)")
    os.ftruncate(fd, size - len(tail))
    return size - len(tail)


def _write_all(fd: int, path: Path, start: int, data: bytes) -> None:
    """One write of `data` at the end of the file (`start` bytes long); if it fails or is cut
    short, the file is cut back to `start` bytes so that no partial row stays."""
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"only {written} of {len(data)} bytes were written")
        os.fsync(fd)
    except OSError as exc:
        os.ftruncate(fd, start)
        raise ClbenchError(f"could not append to the leaderboard {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _rewrite(path: Path, content: bytes, header: list[str], rows: list[dict[str, str]]) -> None:
    """Bring an older file to the current column order (its extra columns kept at the end) with
    the new rows added, in one atomic replace; lines it cannot read are set aside."""
    records, bad = _records(content, header)
    if bad:
        _set_aside(path, [raw for _, raw, _ in bad], f"{len(bad)} unreadable line(s) of the older file ({_describe(bad)})")
    columns = COLUMNS + tuple(c for c in header if c not in COLUMNS)
    with AtomicFile(path) as tmp:
        tmp.write_bytes(_lines([{c: _cell(v) for c, v in r.items()} for r in records] + rows, columns, header=True))


def _set_aside(path: Path, lines: list[bytes], what: str) -> None:
    aside = set_aside_path(path)
    with open(aside, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    warnings.warn(f"{path}: {what} moved to {aside}")
