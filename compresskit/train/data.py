"""Labelled text for sequence-classification fine-tuning: GLUE folders, CSV / JSON-lines
files, or datasets on the Hugging Face hub, read into one `TaskData`.

`data` is a folder (train + dev files), a single file (its seeded 10% becomes dev) or
`hf:NAME[:CONFIG]`. Labels stay the strings written in the data; `TaskData.labels` fixes the
order that turns them into class ids. No torch here, and `datasets` is imported only for `hf:`.

Labels, the same rule in every format: a label is an integer (JSON `1`, or text `1`, `-1`) or a
name (`entailment`). A number that is not written as an integer -- JSON `0.5` or `1.0`, text
`0.5`, `1.0`, `1e3`, `nan` -- is refused: compresskit trains classifiers, and such labels are a
regression target (STS-B's `3.800`) or a float column that should have been integers; taking
each value as a class would train a classifier silently on the wrong problem.
"""

from __future__ import annotations

import codecs
import csv
import json
import random
import re
import reprlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Literal, TypeVar

from compresskit.errors import ConfigError

# Column names tried, in order, when a file does not use the task's own GLUE names.
TEXT_COLUMNS = ("text", "sentence", "sentence1", "question")
PAIR_COLUMNS = ("text_pair", "sentence2", "question2")
LABEL_COLUMN = "label"
SUFFIXES = (".tsv", ".csv", ".jsonl")
HELD_OUT_FRACTION = 0.1
HUB_PREFIX = "hf:"
_INTEGER = re.compile(r"[+-]?\d+")


def _short_repr() -> reprlib.Repr:
    # Values quoted in errors: a hostile one (a huge list, a megabyte string) stays a short line.
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel, short.maxstring, short.maxother = 2, 40, 40
    return short


_SHORT = _short_repr()

T = TypeVar("T")


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: str | None
    label: str  # as written in the data, e.g. "1" or "entailment"


@dataclass(frozen=True)
class TaskSpec:
    """What a task scores with and where its GLUE files keep text and label."""

    name: str
    metrics: tuple[str, ...]  # primary first
    pair: bool | None = None  # None: a pair task iff the data has a second-text column
    text_columns: tuple[str, ...] = ()  # GLUE TSV header names: (text,) or (text, text_pair)
    label_column: str = LABEL_COLUMN
    hub_columns: tuple[str, ...] = ()  # the same texts in the hub's "glue" dataset
    headerless: tuple[str, ...] = ()  # names for the columns of a TSV without a header (CoLA)
    dev_names: tuple[str, ...] = ("dev", "validation")  # file stems, first found wins
    hub_dev_split: str = "validation"
    binary_metrics: tuple[str, ...] | None = None  # replaces `metrics` when there are 2 labels

    def metrics_for(self, labels: Sequence[str]) -> tuple[str, ...]:
        """The metrics for a label set, primary first."""
        if self.binary_metrics is not None and len(labels) == 2:
            return self.binary_metrics
        return self.metrics


def _glue(name: str, metrics: tuple[str, ...], texts: tuple[str, ...], **kw: Any) -> TaskSpec:
    return TaskSpec(name, metrics, pair=len(texts) == 2, text_columns=texts, **kw)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue("sst2", ("accuracy",), ("sentence",), hub_columns=("sentence",)),
        _glue(
            "cola",
            ("mcc", "accuracy"),
            ("sentence",),
            hub_columns=("sentence",),
            headerless=("source", "label", "orig_label", "sentence"),
        ),
        _glue(
            "mrpc",
            ("f1", "accuracy"),
            ("#1 String", "#2 String"),
            label_column="Quality",
            hub_columns=("sentence1", "sentence2"),
        ),
        _glue(
            "rte", ("accuracy",), ("sentence1", "sentence2"), hub_columns=("sentence1", "sentence2")
        ),
        _glue(
            "wnli",
            ("accuracy",),
            ("sentence1", "sentence2"),
            hub_columns=("sentence1", "sentence2"),
        ),
        _glue(
            "qnli", ("accuracy",), ("question", "sentence"), hub_columns=("question", "sentence")
        ),
        _glue(
            "qqp",
            ("f1", "accuracy"),
            ("question1", "question2"),
            label_column="is_duplicate",
            hub_columns=("question1", "question2"),
        ),
        _glue(
            "mnli",
            ("accuracy",),
            ("sentence1", "sentence2"),
            label_column="gold_label",
            hub_columns=("premise", "hypothesis"),
            dev_names=("dev_matched", "dev", "validation"),
            hub_dev_split="validation_matched",
        ),
        TaskSpec("classification", ("accuracy",), binary_metrics=("accuracy", "f1")),
    )
}

_REGRESSION_TASKS = {"stsb"}


def task_spec(name: str) -> TaskSpec:
    """The task registered under `name`, ignoring case, "-" and "_" ("SST-2" is "sst2")."""
    key = re.sub(r"[-_\s]", "", name.lower())
    if key in _REGRESSION_TASKS:
        raise ConfigError(
            f"task {name!r} is a regression task and regression tasks are not supported; "
            f"choose a classification task: {', '.join(TASKS)}"
        )
    if key not in TASKS:
        raise ConfigError(
            f"unknown task {name!r}: known tasks are {', '.join(TASKS)} "
            "(use 'classification' for any labelled text file)"
        )
    return TASKS[key]


@dataclass(frozen=True)
class TaskData:
    task: str
    labels: tuple[str, ...]  # sorted; class id i is labels[i]
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    metrics: tuple[str, ...]  # primary first
    source: str  # one line for reports: where train and dev came from, and any subset

    @property
    def is_pair(self) -> bool:
        return self.train[0].text_pair is not None

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def label_ids(self, split: Literal["train", "dev"]) -> list[int]:
        """The class id (index into `labels`) of every example in `split`."""
        if split not in ("train", "dev"):
            raise ConfigError(f"split must be 'train' or 'dev', got {split!r}")
        ids = {label: i for i, label in enumerate(self.labels)}
        return [ids[example.label] for example in getattr(self, split)]


def load_task(
    task: str,
    data: str | Path,
    *,
    max_train_samples: int | None = None,
    seed: int = 0,
    encoding: str = "utf-8",
) -> TaskData:
    """Read train and dev examples of `task` from a folder, a file or `hf:NAME[:CONFIG]`.

    Args:
        max_train_samples: keep this many train examples, drawn with `seed` and kept in file
            order; None keeps all. Dev is never subsampled.
        seed: drives the subsample and, for a single file, which 10% is held out as dev.
        encoding: of the data files (utf-8, latin-1, cp1252, ...).
    """
    spec = task_spec(task)
    _check_sample_size(max_train_samples)
    splits = _read_splits(spec, data, seed, text_encoding(encoding))
    labels = _label_set(splits)
    train = _subsample(splits.train, max_train_samples, seed)
    train_note = f"{len(train)} of {len(splits.train)}, seed {seed}"
    if len(train) == len(splits.train):
        train_note = str(len(train))
    return TaskData(
        task=spec.name,
        labels=labels,
        train=tuple(train),
        dev=tuple(splits.dev),
        metrics=spec.metrics_for(labels),
        source=f"{splits.origin} (train: {train_note}; dev: {splits.dev_note})",
    )


def _check_sample_size(max_train_samples: int | None) -> None:
    if max_train_samples is None:
        return
    if isinstance(max_train_samples, bool) or not isinstance(max_train_samples, int):
        raise ConfigError(f"max_train_samples must be a whole number, got {max_train_samples!r}")
    if max_train_samples < 1:
        raise ConfigError(
            f"max_train_samples must be at least 1, got {max_train_samples}; "
            "leave it unset to use all of train"
        )


def _subsample(examples: list[Example], size: int | None, seed: int) -> list[Example]:
    if size is None or size >= len(examples):
        return examples
    # Sorted indices keep file order, so a subset reads like the file it came from.
    keep = sorted(random.Random(seed).sample(range(len(examples)), size))
    return [examples[i] for i in keep]


# --- splits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Splits:
    train: list[Example]
    dev: list[Example]
    train_from: str  # for error messages
    dev_from: str
    origin: str  # for `TaskData.source`
    dev_note: str


def _read_splits(spec: TaskSpec, data: str | Path, seed: int, encoding: str) -> _Splits:
    if isinstance(data, str) and data.startswith(HUB_PREFIX):
        splits = _hub_splits(spec, data, seed)
    else:
        path = Path(data)
        if path.is_dir():
            splits = _folder_splits(spec, path, encoding)
        elif path.is_file():
            splits = _file_splits(spec, path, seed, encoding)
        else:
            raise ConfigError(
                f"data {str(data)!r} does not exist: give a folder with train and dev files, "
                f"a train file ({', '.join(SUFFIXES)}) or {HUB_PREFIX}NAME[:CONFIG]"
            )
    _check_splits(splits)
    return splits


def _folder_splits(spec: TaskSpec, folder: Path, encoding: str) -> _Splits:
    train_path = _find(folder, ("train",), "train")
    dev_path = _find(folder, spec.dev_names, "dev")
    train, dev = _read_file(spec, train_path, encoding), _read_file(spec, dev_path, encoding)
    return _Splits(
        train,
        dev,
        str(train_path),
        str(dev_path),
        str(folder),
        str(len(dev)),
    )


def _find(folder: Path, stems: Sequence[str], split: str) -> Path:
    names = [stem + suffix for stem in stems for suffix in SUFFIXES]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    hint = "" if split == "train" else "; or pass the train file itself to hold out 10% as dev"
    raise ConfigError(f"no {split} file in {folder}: looked for {', '.join(names)}{hint}")


def _file_splits(spec: TaskSpec, path: Path, seed: int, encoding: str) -> _Splits:
    examples = _read_file(spec, path, encoding)
    train, dev = hold_out(examples, seed, str(path))
    note = f"{len(dev)} held out of {len(examples)}, seed {seed}"
    return _Splits(train, dev, str(path), f"held out of {path}", str(path), note)


def hold_out(items: list[T], seed: int, where: str) -> tuple[list[T], list[T]]:
    """Split off a seeded HELD_OUT_FRACTION (at least one item) as dev, both in file order."""
    if len(items) < 2:
        raise ConfigError(
            f"{where} has {len(items)} example(s): at least 2 are needed to hold one out "
            "as dev; add examples or give a folder with train and dev files"
        )
    size = max(1, int(len(items) * HELD_OUT_FRACTION))
    held = set(random.Random(seed).sample(range(len(items)), size))
    train = [e for i, e in enumerate(items) if i not in held]
    return train, [e for i, e in enumerate(items) if i in held]


def _check_splits(splits: _Splits) -> None:
    for examples, where in ((splits.train, splits.train_from), (splits.dev, splits.dev_from)):
        if not examples:
            raise ConfigError(f"{where} has no examples: add some, or point at another file")
    if (splits.train[0].text_pair is None) != (splits.dev[0].text_pair is None):
        has, lacks = (
            (splits.train_from, splits.dev_from)
            if splits.train[0].text_pair is not None
            else (splits.dev_from, splits.train_from)
        )
        raise ConfigError(
            f"{has} has a second-text column but {lacks} does not: "
            "give train and dev the same columns"
        )


def _label_set(splits: _Splits) -> tuple[str, ...]:
    """Train's labels, sorted as numbers when all are integers; dev must use only these."""
    found = {example.label for example in splits.train}
    if all(_INTEGER.fullmatch(label) for label in found):
        labels = tuple(sorted(found, key=lambda label: (int(label), label)))
    else:
        labels = tuple(sorted(found))
    if len(labels) < 2:
        raise ConfigError(
            f"{splits.train_from} has only the label {labels[0]!r}: a classifier needs at "
            "least 2; check that the label column is the right one"
        )
    for example in splits.dev:
        if example.label not in found:
            raise ConfigError(
                f"label {example.label!r} in dev ({splits.dev_from}) does not occur in train "
                f"({splits.train_from}, labels {_listing(labels)}): every dev label must "
                "occur in train; fix the label or add train examples with it"
            )
    return labels


def _listing(names: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


# --- files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    """A file's column names and its rows as (line number, {column: value})."""

    where: str
    columns: tuple[str, ...]
    rows: Iterable[tuple[int, Mapping[str, Any]]]


@dataclass(frozen=True)
class _Columns:
    text: str
    pair: str | None
    label: str


def _read_file(spec: TaskSpec, path: Path, encoding: str) -> list[Example]:
    readers = {".tsv": _tsv_table, ".csv": _csv_table, ".jsonl": _jsonl_table}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: unknown file type {path.suffix!r}; use {', '.join(SUFFIXES)}")
    return _examples(spec, reader(spec, path, encoding))


def text_encoding(name: str) -> str:
    """The codec to read data files with: `name` checked, and UTF-8 read as utf-8-sig (a
    byte-order mark some editors write is not text). Line-based reading needs an encoding in
    which a line break is the byte 0x0A, which excludes UTF-16 and UTF-32."""
    try:
        codec = codecs.lookup(name).name
    except (LookupError, TypeError):
        raise ConfigError(
            f"unknown encoding {name!r}: give a Python codec name such as utf-8, latin-1 or cp1252"
        ) from None
    if codec.startswith(("utf-16", "utf-32")):
        raise ConfigError(f"{name} files cannot be read line by line: re-save them as UTF-8")
    return "utf-8-sig" if codec == "utf-8" else codec


def read_lines(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break) for every non-empty line."""
    try:
        # newline="\n": a stray "\r" inside a GLUE sentence must not end the line.
        with path.open(encoding=encoding, newline="\n") as file:
            for number, line in enumerate(file, start=1):
                line = line.rstrip("\r\n")
                if line:
                    yield number, line
    except UnicodeDecodeError as err:
        raise _not_decodable(path, encoding, err) from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None


def _not_decodable(path: Path, encoding: str, err: UnicodeDecodeError) -> ConfigError:
    """Which line of `path` does not decode: the reader's error gives a position in its
    buffer, not in the file, so find the line again in the raw bytes."""
    where = ""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                where = f" line {number}"
                break
    name = "UTF-8" if encoding == "utf-8-sig" else encoding
    return ConfigError(
        f"{path}{where} is not {name} text ({err.reason}): re-save the file as UTF-8, or name "
        "its encoding with --encoding (e.g. --encoding latin-1)"
    )


def _tsv_table(spec: TaskSpec, path: Path, encoding: str) -> _Table:
    # GLUE TSVs do not quote: a '"' is part of the text, so split on tabs by hand.
    lines = read_lines(path, encoding)
    first = next(lines, None)
    if first is None:
        raise ConfigError(f"{path} is empty; give a file with examples")
    header = tuple(first[1].split("\t"))
    if spec.headerless and not {*spec.text_columns, spec.label_column} <= set(header):
        # GLUE's CoLA files have no header: the first line is already an example.
        header = spec.headerless
        lines = chain([first], lines)
    rows = ((number, _row(header, line.split("\t"))) for number, line in lines)
    return _Table(str(path), header, rows)


def _csv_table(spec: TaskSpec, path: Path, encoding: str) -> _Table:
    rows = _csv_rows(path, encoding)
    first = next(rows, None)
    if first is None:
        raise ConfigError(f"{path} is empty; give a header line and examples")
    header = tuple(first[1])
    return _Table(str(path), header, ((n, _csv_row(path, header, n, row)) for n, row in rows))


def _csv_row(path: Path, header: Sequence[str], number: int, fields: list[str]) -> dict[str, str]:
    # More fields than the header: a comma in unquoted text split it, and every column after
    # it (the label too) would silently be read from the wrong field.
    if any(field.strip() for field in fields[len(header) :]):
        raise ConfigError(
            f"{path} line {number} has {len(fields)} fields but the header has {len(header)}: "
            'put text that contains commas in quotes ("good, really good")'
        )
    return _row(header, fields)


def _row(header: Sequence[str], fields: Sequence[str]) -> dict[str, str]:
    # Not strict: a short row only fails if it lacks a column the task reads (see `_value`).
    return dict(zip(header, fields, strict=False))


def _csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, fields) for every non-empty record."""
    start = 1
    try:
        with path.open(encoding=encoding, newline="") as file:
            # strict: a quote that never closes, or text after a closing quote, is an error.
            # Not strict, the csv module silently merges every line up to the next quote (or
            # to the end of the file) into one field.
            reader = csv.reader(file, strict=True)
            for row in reader:
                if row:
                    yield start, row
                start = reader.line_num + 1
    except UnicodeDecodeError as err:
        raise _not_decodable(path, encoding, err) from None
    except csv.Error as err:  # only the reader raises it, so `reader` exists
        raise _csv_error(path, start, reader.line_num, err) from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from None


def _csv_error(path: Path, start: int, end: int, err: csv.Error) -> ConfigError:
    # The reader fails where it gives up, often lines after the quote that caused it: name
    # the line its record started on, which is where that quote opened.
    if "unexpected end of data" in str(err):
        return ConfigError(
            f"{path} line {start} opens a quoted field that is never closed (it runs to the "
            'end of the file): close the quote, or write a quote inside text as two ("")'
        )
    runs_on = f" (a quoted field runs on to line {end})" if end > start else ""
    return ConfigError(
        f"{path} line {start} is not valid CSV{runs_on}: {err}; check the quotes on that line, "
        'a field with a quote in it is quoted as a whole, the quote doubled ("say ""hi""")'
    )


def _jsonl_table(spec: TaskSpec, path: Path, encoding: str) -> _Table:
    rows = (_json_object(path, number, line) for number, line in read_lines(path, encoding))
    first = next(rows, None)
    if first is None:
        raise ConfigError(f"{path} is empty: it needs one JSON object per line")
    return _Table(str(path), tuple(first[1]), chain([first], rows))


def _json_object(path: Path, number: int, line: str) -> tuple[int, Mapping[str, Any]]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{number} is not valid JSON ({err.msg}); fix that line") from None
    # The json module raises these for valid JSON it cannot hold: a line from anyone must end
    # in ConfigError, never in a traceback.
    except RecursionError:
        raise ConfigError(
            f"{path}:{number} is JSON nested too deeply to read; a line holds one flat object "
            '({"text": ..., "label": ...})'
        ) from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise ConfigError(
            f"{path}:{number} holds a number too long to read (thousands of digits); fix that line"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}:{number} is not a JSON object; write one object per line")
    return number, value


# --- rows -> examples -----------------------------------------------------------------------


def _examples(spec: TaskSpec, table: _Table) -> list[Example]:
    columns = _resolve_columns(spec, table.columns, table.where)
    return [_example(columns, row, f"{table.where} line {n}") for n, row in table.rows]


def _resolve_columns(spec: TaskSpec, present: Sequence[str], where: str) -> _Columns:
    """Pick the text, second-text and label columns, trying the task's GLUE names first."""
    text = _require("text", _candidates(spec, 0, TEXT_COLUMNS), present, spec, where)
    label = _require("label", (spec.label_column, LABEL_COLUMN), present, spec, where)
    if spec.pair is False:
        return _Columns(text, None, label)
    # A qnli file with "sentence" as its text must not take that column as its pair too.
    pair_names = [name for name in _candidates(spec, 1, PAIR_COLUMNS) if name != text]
    if spec.pair:
        return _Columns(text, _require("second-text", pair_names, present, spec, where), label)
    return _Columns(text, _first_present(pair_names, present), label)


def _require(
    role: str, names: Sequence[str], present: Sequence[str], spec: TaskSpec, where: str
) -> str:
    found = _first_present(names, present)
    if found is None:
        raise ConfigError(
            f"{where} has no {role} column for task {spec.name!r}: looked for "
            f"{_listing(list(dict.fromkeys(names)))}; it has {_listing(present) or 'none'}"
        )
    return found


def _candidates(spec: TaskSpec, position: int, generic: Sequence[str]) -> tuple[str, ...]:
    own = [
        names[position] for names in (spec.text_columns, spec.hub_columns) if len(names) > position
    ]
    return tuple(dict.fromkeys([*own, *generic]))


def _first_present(names: Iterable[str], present: Sequence[str]) -> str | None:
    return next((name for name in names if name in present), None)


def _example(columns: _Columns, row: Mapping[str, Any], at: str) -> Example:
    text = _text(row, columns.text, at)
    pair = None if columns.pair is None else _text(row, columns.pair, at)
    return Example(text, pair, _label(row, columns.label, at))


def _value(row: Mapping[str, Any], column: str, at: str) -> Any:
    if column not in row:
        raise ConfigError(
            f"{at} has no value for column {column!r} (too few columns: {len(row)}); "
            "fix or remove that line"
        )
    return row[column]


def _text(row: Mapping[str, Any], column: str, at: str) -> str:
    value = _value(row, column, at)
    if not isinstance(value, str):
        raise ConfigError(f"{at}: column {column!r} must be a string, got {_SHORT.repr(value)}")
    return value


def _label(row: Mapping[str, Any], column: str, at: str) -> str:
    """The label as text, by the rule in the module docstring."""
    value = _value(row, column, at)
    if isinstance(value, float) or (isinstance(value, str) and _is_decimal(value.strip())):
        raise ConfigError(
            f"{at}: label {_SHORT.repr(value)} is a number but not an integer: compresskit "
            "trains classifiers, and such labels look like a regression target (STS-B style), "
            "which is not supported; write classes as integers (1, not 1.0) or names"
        )
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{at}: label {_SHORT.repr(value)} must be a string or an integer")
    label = str(value).strip()
    if not label:
        raise ConfigError(f"{at} has an empty label; fill it in or remove the line")
    return label


def _is_decimal(text: str) -> bool:
    """A number not written as an integer: "0.5", "1.0", "1e3", "nan", "inf"."""
    if _INTEGER.fullmatch(text):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- Hugging Face hub -----------------------------------------------------------------------


def _hub_splits(spec: TaskSpec, ref: str, seed: int) -> _Splits:
    dataset = load_hub(ref)
    if "train" not in dataset:
        raise ConfigError(f"{ref} has no 'train' split (it has {_listing(list(dataset))})")
    train = _hub_examples(spec, dataset["train"], f"{ref} train")
    if spec.hub_dev_split in dataset:
        dev = _hub_examples(spec, dataset[spec.hub_dev_split], f"{ref} {spec.hub_dev_split}")
        note = f"{spec.hub_dev_split}, {len(dev)}"
        return _Splits(train, dev, f"{ref} train", f"{ref} {spec.hub_dev_split}", ref, note)
    # No validation split (imdb has only train/test): hold out part of train rather than
    # tune on test.
    everything = len(train)
    train, dev = hold_out(train, seed, f"{ref} train")
    note = f"{len(dev)} held out of train's {everything}, seed {seed}"
    return _Splits(train, dev, f"{ref} train", f"held out of {ref} train", ref, note)


def load_hub(ref: str) -> Any:
    name, _, config = ref.removeprefix(HUB_PREFIX).partition(":")
    if not name:
        raise ConfigError(f"{ref!r} names no dataset: write hf:NAME or hf:NAME:CONFIG")
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"reading {ref} needs the datasets package: pip install datasets"
        ) from None
    try:
        return datasets.load_dataset(name, config or None)
    except Exception as err:  # the hub raises many types; all mean "could not load"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(
            f"cannot load {ref} from the hub ({reason}); check the name, config and network, "
            "or give a local folder"
        ) from None


def _hub_examples(spec: TaskSpec, split: Any, where: str) -> list[Example]:
    columns = _resolve_columns(spec, list(split.column_names), where)
    names = [columns.text, columns.label] + ([columns.pair] if columns.pair else [])
    # Whole columns at once: row-by-row access to a hub dataset is much slower.
    values = zip(*(list(split[name]) for name in names), strict=True)
    return [
        _example(columns, dict(zip(names, row, strict=True)), f"{where} row {i}")
        for i, row in enumerate(values)
    ]
