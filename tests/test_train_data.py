"""Training data: every GLUE layout, CSV / JSON-lines files, hub datasets (through a fake
`datasets` module), subsetting, held-out dev, and one readable line for every mistake."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import GLUE

from compresskit.errors import ConfigError
from compresskit.train.data import TASKS, Example, TaskData, load_task, task_spec

GLUE_TASKS = [name for name in TASKS if name != "classification"]
PAIR_TASKS = {"mrpc", "rte", "qnli", "qqp", "mnli", "wnli"}

MNLI_COLUMNS = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2"
)
# The header of each GLUE train file (CoLA has none), and how one example is laid out.
GLUE_HEADERS = {
    "sst2": "sentence\tlabel",
    "cola": None,
    "mrpc": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "rte": "index\tsentence1\tsentence2\tlabel",
    "wnli": "index\tsentence1\tsentence2\tlabel",
    "qnli": "index\tquestion\tsentence\tlabel",
    "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
    "mnli": MNLI_COLUMNS + "\tlabel1\tgold_label",
}
GLUE_ROWS: dict[str, Callable[[str, str, str], str]] = {
    "sst2": lambda text, pair, label: f"{text}\t{label}",
    "cola": lambda text, pair, label: f"gj04\t{label}\t\t{text}",
    "mrpc": lambda text, pair, label: f"{label}\t11\t12\t{text}\t{pair}",
    "rte": lambda text, pair, label: f"0\t{text}\t{pair}\t{label}",
    "wnli": lambda text, pair, label: f"0\t{text}\t{pair}\t{label}",
    "qnli": lambda text, pair, label: f"0\t{text}\t{pair}\t{label}",
    "qqp": lambda text, pair, label: f"0\t1\t2\t{text}\t{pair}\t{label}",
    "mnli": lambda text, pair, label: (
        f"0\t1\t2e\tfiction\t( a )\t( b )\t(S a)\t(S b)\t{text}\t{pair}\t{label}\t{label}"
    ),
}
GLUE_LABELS = {
    "sst2": ("0", "1"),
    "cola": ("0", "1"),
    "mrpc": ("0", "1"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("0", "1"),
    "qnli": ("entailment", "not_entailment"),
    "qqp": ("0", "1"),
    "mnli": ("contradiction", "entailment", "neutral"),
}
GLUE_METRICS = {
    "sst2": ("accuracy",),
    "cola": ("mcc", "accuracy"),
    "mrpc": ("f1", "accuracy"),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "qnli": ("accuracy",),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy",),
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def glue_file(task: str, rows: list[tuple[str, str, str]], *, header: str | None = None) -> str:
    """A GLUE TSV of (text, pair, label) rows in `task`'s layout."""
    lines = [GLUE_ROWS[task](*row) for row in rows]
    header = header or GLUE_HEADERS[task]
    return "\n".join(([header] if header else []) + lines) + "\n"


def glue_rows(task: str, count: int, offset: int = 0) -> list[tuple[str, str, str]]:
    labels = GLUE_LABELS[task]
    return [
        (f"text {i}", f"pair {i}", labels[i % len(labels)]) for i in range(offset, offset + count)
    ]


def glue_folder(root: Path, task: str, train: int = 6, dev: int = 3) -> Path:
    folder = root / task
    dev_name, dev_header = "dev.tsv", None
    if task == "mnli":
        dev_name = "dev_matched.tsv"
        dev_header = MNLI_COLUMNS + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
    write(folder / "train.tsv", glue_file(task, glue_rows(task, train)))
    dev_rows = [GLUE_ROWS[task](*row) for row in glue_rows(task, dev, offset=100)]
    if task == "mnli":  # dev_matched has five annotator labels before gold_label
        dev_rows = [
            row.rsplit("\t", 1)[0] + "\tx\tx\tx\tx\t" + row.rsplit("\t", 1)[1] for row in dev_rows
        ]
    header = dev_header or GLUE_HEADERS[task]
    write(folder / dev_name, "\n".join(([header] if header else []) + dev_rows) + "\n")
    return folder


def config_error(call: Callable[[], Any]) -> str:
    """The message of the ConfigError `call` raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def fake_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


# --- GLUE folders -------------------------------------------------------------------------


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_every_glue_task_reads_its_folder(tmp_path, task):
    data = load_task(task, glue_folder(tmp_path, task))
    assert data.task == task
    assert data.labels == GLUE_LABELS[task]
    assert data.metrics == GLUE_METRICS[task]
    assert (len(data.train), len(data.dev)) == (6, 3)
    pair = "pair 0" if task in PAIR_TASKS else None
    assert data.train[0] == Example("text 0", pair, GLUE_LABELS[task][0])
    assert data.dev[-1].text == "text 102"
    assert data.is_pair == (task in PAIR_TASKS)


def test_glue_quotes_are_text_not_quoting(tmp_path):
    texts = ['"a quoted start', 'it \'s "fine" , really ', "unbalanced ' and \" marks"]
    train = "sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(texts))
    write(tmp_path / "train.tsv", train)
    write(tmp_path / "dev.tsv", 'sentence\tlabel\n"\t0\n')
    data = load_task("sst2", tmp_path)
    assert [e.text for e in data.train] == texts
    assert data.dev[0].text == '"'


def test_cola_files_have_no_header(tmp_path):
    write(tmp_path / "train.tsv", "gj04\t1\t\tThe sailors rode.\ngj04\t0\t*\tRode sailors the.\n")
    write(tmp_path / "dev.tsv", "cj99\t1\t\tA dog barked.\n")
    data = load_task("CoLA", tmp_path)
    assert data.train == (
        Example("The sailors rode.", None, "1"),
        Example("Rode sailors the.", None, "0"),
    )
    assert data.metrics[0] == "mcc"


def test_cola_tsv_with_a_header_is_read_by_name(tmp_path):
    write(tmp_path / "train.tsv", "label\tsentence\n1\tGood.\n0\tBad good.\n")
    write(tmp_path / "dev.tsv", "label\tsentence\n1\tFine.\n")
    assert load_task("cola", tmp_path).train[0] == Example("Good.", None, "1")


def test_mnli_dev_is_dev_matched_with_columns_found_by_name(tmp_path):
    data = load_task("MNLI", glue_folder(tmp_path, "mnli"))
    assert data.dev[0] == Example("text 100", "pair 100", "entailment")  # 100 % 3 == 1
    assert "dev: 3" in data.source


def test_blank_lines_and_crlf_endings_are_ignored(tmp_path):
    write(tmp_path / "train.tsv", "sentence\tlabel\r\n\r\na\t0\r\n\nb\t1\r\n")
    write(tmp_path / "dev.tsv", "sentence\tlabel\nc\t1\n\n")
    data = load_task("sst2", tmp_path)
    assert [e.text for e in data.train] == ["a", "b"]
    assert len(data.dev) == 1


# --- tasks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("SST-2", "sst2"),
        ("sst-2", "sst2"),
        ("sst2", "sst2"),
        ("CoLA", "cola"),
        ("MNLI", "mnli"),
        ("QQP", "qqp"),
        ("Classification", "classification"),
    ],
)
def test_task_names_ignore_case_and_dashes(name, canonical):
    assert task_spec(name).name == canonical


def test_unknown_task_lists_the_known_ones():
    message = config_error(lambda: task_spec("squad"))
    assert "unknown task 'squad'" in message
    assert all(name in message for name in TASKS)


@pytest.mark.parametrize("name", ["stsb", "STS-B"])
def test_regression_tasks_are_refused(name):
    assert "regression" in config_error(lambda: task_spec(name))


@pytest.mark.parametrize("task", GLUE_TASKS)
def test_task_metrics_exist(task):
    from compresskit.train.metrics import METRICS

    assert task_spec(task).metrics == GLUE_METRICS[task]
    assert set(task_spec(task).metrics) <= set(METRICS)


def test_label_ids_index_into_the_sorted_labels(tmp_path):
    data = load_task("mnli", glue_folder(tmp_path, "mnli"))
    assert data.num_labels == 3
    # rows cycle contradiction, entailment, neutral; dev starts at row 100 (100 % 3 == 1)
    assert data.label_ids("train") == [0, 1, 2, 0, 1, 2]
    assert data.label_ids("dev") == [1, 2, 0]


# --- CSV and JSON lines -------------------------------------------------------------------


def test_csv_quoted_commas_and_generic_classification(tmp_path):
    write(tmp_path / "train.csv", 'text,label\n"good, really good",pos\nbad,neg\n"a ""b""",pos\n')
    write(tmp_path / "dev.csv", 'text,label\n"fine, I guess",neg\n')
    data = load_task("classification", tmp_path)
    assert data.train[0] == Example("good, really good", None, "pos")
    assert data.train[2].text == 'a "b"'
    assert data.labels == ("neg", "pos")
    assert data.metrics == ("accuracy", "f1")
    assert not data.is_pair


def test_classification_with_three_labels_scores_accuracy_only(tmp_path):
    rows = [{"text": f"t{i}", "label": ["a", "b", "c"][i % 3]} for i in range(6)]
    fake_jsonl(tmp_path / "train.jsonl", rows)
    fake_jsonl(tmp_path / "dev.jsonl", rows[:2])
    assert load_task("classification", tmp_path).metrics == ("accuracy",)


def test_classification_is_a_pair_task_when_the_file_has_a_pair_column(tmp_path):
    rows = [{"sentence1": f"a{i}", "sentence2": f"b{i}", "label": i % 2} for i in range(4)]
    fake_jsonl(tmp_path / "train.jsonl", rows)
    fake_jsonl(tmp_path / "validation.jsonl", rows[:1])
    data = load_task("classification", tmp_path)
    assert data.is_pair
    assert data.train[1] == Example("a1", "b1", "1")


def test_jsonl_integer_labels_become_strings_sorted_as_numbers(tmp_path):
    rows = [{"text": str(i), "label": label} for i, label in enumerate([10, 2, "2", 10, -1])]
    fake_jsonl(tmp_path / "train.jsonl", rows)
    fake_jsonl(tmp_path / "dev.jsonl", rows[:1])
    data = load_task("classification", tmp_path)
    assert data.labels == ("-1", "2", "10")
    assert data.train[0].label == "10"


def test_labels_that_are_not_all_integers_sort_as_strings(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,b\nc,10\nd,9\n")
    write(tmp_path / "dev.csv", "text,label\na,b\n")
    assert load_task("classification", tmp_path).labels == ("10", "9", "b")


def test_glue_task_in_csv_with_its_own_column_names(tmp_path):
    write(tmp_path / "train.csv", "question,sentence,label\nWho?,Me.,entailment\nWhy?,No.,x\n")
    write(tmp_path / "dev.csv", "question,sentence,label\nWhere?,Here.,x\n")
    assert load_task("qnli", tmp_path).train[0] == Example("Who?", "Me.", "entailment")


def test_glue_task_in_jsonl_with_hub_column_names(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(3)]
    fake_jsonl(tmp_path / "train.jsonl", rows)
    fake_jsonl(tmp_path / "dev.jsonl", rows)
    assert load_task("mnli", tmp_path).train[2] == Example("p2", "h2", "2")


def test_glue_task_in_csv_with_generic_column_names(tmp_path):
    write(tmp_path / "train.csv", "text,label\na,0\nb,1\n")
    write(tmp_path / "dev.csv", "text,label\nc,1\n")
    assert load_task("sst2", tmp_path).train[1] == Example("b", None, "1")


def test_single_sentence_task_ignores_a_pair_column(tmp_path):
    write(tmp_path / "train.csv", "sentence,sentence2,label\na,x,0\nb,y,1\n")
    write(tmp_path / "dev.csv", "sentence,sentence2,label\nc,z,1\n")
    assert not load_task("sst2", tmp_path).is_pair


# --- subsets and held-out dev -------------------------------------------------------------


@pytest.fixture
def sst2_folder(tmp_path: Path) -> Path:
    return glue_folder(tmp_path, "sst2", train=50, dev=7)


def test_subset_is_seeded_and_kept_in_file_order(sst2_folder):
    first = load_task("sst2", sst2_folder, max_train_samples=10, seed=3)
    again = load_task("sst2", sst2_folder, max_train_samples=10, seed=3)
    other = load_task("sst2", sst2_folder, max_train_samples=10, seed=4)
    assert first.train == again.train
    assert first.train != other.train
    positions = [int(e.text.split()[1]) for e in first.train]
    assert positions == sorted(positions) and len(set(positions)) == 10
    assert len(first.dev) == 7  # dev is never subsampled
    assert first.source == f"{sst2_folder} (train: 10 of 50, seed 3; dev: 7)"


@pytest.mark.parametrize("size", [None, 50, 1000])
def test_no_subset_when_unset_or_not_smaller(sst2_folder, size):
    data = load_task("sst2", sst2_folder, max_train_samples=size)
    assert len(data.train) == 50
    assert data.source == f"{sst2_folder} (train: 50; dev: 7)"


def test_labels_come_from_all_of_train_not_the_subset(sst2_folder):
    assert load_task("sst2", sst2_folder, max_train_samples=1).labels == ("0", "1")


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "10"])
def test_max_train_samples_must_be_a_positive_integer(sst2_folder, size):
    assert "max_train_samples" in config_error(
        lambda: load_task("sst2", sst2_folder, max_train_samples=size)
    )


def test_a_single_file_holds_out_a_seeded_tenth_as_dev(tmp_path):
    path = write(tmp_path / "all.tsv", glue_file("sst2", glue_rows("sst2", 40)))
    data = load_task("sst2", path, seed=1)
    everything = load_task("sst2", glue_folder(tmp_path, "sst2", train=40)).train
    assert len(data.dev) == 4
    assert set(data.train) | set(data.dev) == set(everything)
    assert not set(data.train) & set(data.dev)
    assert list(data.dev) == [e for e in everything if e in data.dev]  # file order
    assert load_task("sst2", path, seed=1).dev == data.dev
    assert load_task("sst2", path, seed=2).dev != data.dev
    assert data.source == f"{path} (train: 36; dev: 4 held out of 40, seed 1)"


def test_a_small_file_holds_out_at_least_one_example(tmp_path):
    path = write(tmp_path / "tiny.csv", "text,label\na,0\nb,1\nc,0\nd,1\n")
    data = load_task("classification", path)
    assert (len(data.train), len(data.dev)) == (3, 1)


# --- mistakes, each one line --------------------------------------------------------------

# (files to write under the data folder, task, data path relative to it, words in the message)
MISTAKES: dict[str, tuple[dict[str, str], str, str, tuple[str, ...]]] = {
    "no train file": (
        {"dev.tsv": "sentence\tlabel\na\t0\n"},
        "sst2",
        ".",
        ("no train file", "train.tsv, train.csv, train.jsonl"),
    ),
    "no dev file": (
        {"train.tsv": "sentence\tlabel\na\t0\n"},
        "sst2",
        ".",
        ("no dev file", "dev.tsv", "validation.jsonl"),
    ),
    "no mnli dev file": (
        {"train.tsv": "sentence\tlabel\na\t0\n"},
        "mnli",
        ".",
        ("dev_matched.tsv",),
    ),
    "missing path": ({}, "sst2", "nowhere", ("does not exist", "hf:NAME")),
    "unknown file type": ({"data.txt": "a\n"}, "sst2", "data.txt", ("unknown file type '.txt'",)),
    "too few columns": (
        {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tx\n1\ta\n", "dev.tsv": ""},
        "rte",
        ".",
        ("train.tsv line 3", "too few columns"),
    ),
    "no text column": (
        {"train.csv": "body,label\na,0\n", "dev.csv": "body,label\na,0\n"},
        "classification",
        ".",
        ("train.csv has no text column", "'text'", "it has 'body', 'label'"),
    ),
    "no label column": (
        {"train.csv": "text,target\na,0\n", "dev.csv": "text,target\na,0\n"},
        "classification",
        ".",
        ("no label column", "'text', 'target'"),
    ),
    "no pair column for a pair task": (
        {"train.csv": "sentence1,label\na,0\n", "dev.csv": "sentence1,label\na,0\n"},
        "rte",
        ".",
        ("no second-text column for task 'rte'", "'sentence2'"),
    ),
    "bad json line": (
        {"train.jsonl": '{"text": "a", "label": 0}\n{"text": \n', "dev.jsonl": ""},
        "classification",
        ".",
        ("train.jsonl:2 is not valid JSON",),
    ),
    "json line not an object": (
        {"train.jsonl": '{"text": "a", "label": 0}\n[1, 2]\n', "dev.jsonl": ""},
        "classification",
        ".",
        ("train.jsonl:2 is not a JSON object",),
    ),
    "json text not a string": (
        {"train.jsonl": '{"text": "a", "label": 0}\n{"text": null, "label": 1}\n'},
        "classification",
        "train.jsonl",
        ("train.jsonl line 2", "must be a string"),
    ),
    "json float label": (
        {"train.jsonl": '{"text": "a", "label": 0.5}\n{"text": "b", "label": 1}\n'},
        "classification",
        "train.jsonl",
        ("train.jsonl line 1", "regression"),
    ),
    "empty label": (
        {"train.csv": "text,label\na,0\nb,\n"},
        "classification",
        "train.csv",
        ("train.csv line 3 has an empty label",),
    ),
    "dev label not in train": (
        {"train.tsv": "sentence\tlabel\na\t0\nb\t1\n", "dev.tsv": "sentence\tlabel\nc\t2\n"},
        "sst2",
        ".",
        ("label '2' in dev", "dev.tsv", "does not occur in train", "'0', '1'"),
    ),
    "empty train": (
        {"train.tsv": "sentence\tlabel\n", "dev.tsv": "sentence\tlabel\nc\t1\n"},
        "sst2",
        ".",
        ("train.tsv has no examples",),
    ),
    "empty dev": (
        {"train.tsv": "sentence\tlabel\na\t0\nb\t1\n", "dev.tsv": "sentence\tlabel\n"},
        "sst2",
        ".",
        ("dev.tsv has no examples",),
    ),
    "empty file": (
        {"train.csv": "", "dev.csv": "text,label\na,0\n"},
        "classification",
        ".",
        ("train.csv is empty",),
    ),
    "one label in train": (
        {"train.tsv": "sentence\tlabel\na\t1\nb\t1\n", "dev.tsv": "sentence\tlabel\nc\t1\n"},
        "sst2",
        ".",
        ("only the label '1'", "at least 2"),
    ),
    "one example to hold out from": (
        {"one.csv": "text,label\na,0\n"},
        "classification",
        "one.csv",
        ("1 example(s)", "at least 2"),
    ),
    "pair column in train only": (
        {"train.csv": "text,text_pair,label\na,b,0\nc,d,1\n", "dev.csv": "text,label\ne,1\n"},
        "classification",
        ".",
        ("train.csv has a second-text column but", "dev.csv does not"),
    ),
    "not utf-8": (
        {"train.csv": "text,label\n\udcff,0\n"},
        "classification",
        "train.csv",
        ("train.csv line 2 is not UTF-8 text", "--encoding"),
    ),
}


LATIN_1_ROWS = "sentence\tlabel\ncaf\xe9 cr\xe8me good\t1\nna\xefve and dull\t0\n"


def test_an_encoding_reads_files_that_are_not_utf8(tmp_path):
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_bytes(LATIN_1_ROWS.encode("latin-1"))
    data = load_task("sst2", tmp_path, encoding="latin-1")
    assert [e.text for e in data.dev] == ["caf\xe9 cr\xe8me good", "na\xefve and dull"]
    message = config_error(lambda: load_task("sst2", tmp_path))
    assert "train.tsv line 2 is not UTF-8 text" in message


@pytest.mark.parametrize(
    ("encoding", "words"),
    [("klingon", "unknown encoding 'klingon'"), ("utf-16", "cannot be read line by line")],
)
def test_unusable_encodings_are_refused(tmp_path, encoding, words):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    assert words in config_error(
        lambda: load_task("sst2", tmp_path / "train.tsv", encoding=encoding)
    )


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistakes_raise_one_line_config_errors(tmp_path, mistake):
    files, task, where, words = MISTAKES[mistake]
    for name, text in files.items():
        (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    message = config_error(lambda: load_task(task, tmp_path / where))
    for word in words:
        assert word in message, message


# --- Hugging Face hub (a fake `datasets`; there is no network) ----------------------------


class FakeSplit:
    """Just what data.py uses of a `datasets.Dataset`: column names and whole columns."""

    def __init__(self, columns: dict[str, list[Any]]):
        self.columns = columns

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __getitem__(self, name: str) -> list[Any]:
        return self.columns[name]


def fake_hub(monkeypatch, datasets: dict[tuple[str, str | None], dict[str, FakeSplit]]) -> list:
    calls: list[tuple[str, str | None]] = []

    def load_dataset(name: str, config: str | None = None) -> dict[str, FakeSplit]:
        calls.append((name, config))
        if (name, config) not in datasets:
            raise ConnectionError(f"Couldn't reach '{name}' on the Hub\n(LocalEntryNotFoundError)")
        return datasets[(name, config)]

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    return calls


def test_hub_glue_task_reads_train_and_validation(monkeypatch):
    train = FakeSplit({"sentence": ["good", "bad", "ok"], "label": [1, 0, 1], "idx": [0, 1, 2]})
    dev = FakeSplit({"sentence": ["fine"], "label": [1], "idx": [0]})
    calls = fake_hub(monkeypatch, {("glue", "sst2"): {"train": train, "validation": dev}})
    data = load_task("sst2", "hf:glue:sst2")
    assert calls == [("glue", "sst2")]
    assert data.train[0] == Example("good", None, "1")
    assert data.labels == ("0", "1")
    assert data.dev == (Example("fine", None, "1"),)
    assert data.source == "hf:glue:sst2 (train: 3; dev: validation, 1)"


def test_hub_mnli_uses_premise_hypothesis_and_validation_matched(monkeypatch):
    def split(n: int) -> FakeSplit:
        return FakeSplit({"premise": ["p"] * n, "hypothesis": ["h"] * n, "label": [0, 1, 2][:n]})

    splits = {"train": split(3), "validation_matched": split(2), "validation_mismatched": split(1)}
    fake_hub(monkeypatch, {("glue", "mnli"): splits})
    data = load_task("mnli", "hf:glue:mnli")
    assert data.train[2] == Example("p", "h", "2")
    assert len(data.dev) == 2


def test_hub_dataset_without_validation_holds_out_part_of_train(monkeypatch):
    train = FakeSplit(
        {"text": [f"review {i}" for i in range(20)], "label": [i % 2 for i in range(20)]}
    )
    test = FakeSplit({"text": ["unused"], "label": [0]})
    calls = fake_hub(monkeypatch, {("imdb", None): {"train": train, "test": test}})
    data = load_task("classification", "hf:imdb", seed=5)
    assert calls == [("imdb", None)]
    assert (len(data.train), len(data.dev)) == (18, 2)
    assert "unused" not in {e.text for e in data.dev}
    assert data.source == "hf:imdb (train: 18; dev: 2 held out of train's 20, seed 5)"


def test_hub_errors_become_one_line(monkeypatch):
    fake_hub(monkeypatch, {})
    message = config_error(lambda: load_task("sst2", "hf:glue:sst2"))
    assert "cannot load hf:glue:sst2" in message
    assert "Couldn't reach 'glue'" in message


def test_hub_needs_the_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    assert "pip install datasets" in config_error(lambda: load_task("sst2", "hf:glue:sst2"))


def test_hub_reference_needs_a_name():
    assert "names no dataset" in config_error(lambda: load_task("sst2", "hf:"))


def test_hub_split_without_the_task_columns(monkeypatch):
    train = FakeSplit({"content": ["a", "b"], "label": [0, 1]})
    fake_hub(monkeypatch, {("x", None): {"train": train, "validation": train}})
    message = config_error(lambda: load_task("classification", "hf:x"))
    assert "hf:x train has no text column" in message


# --- the real GLUE copies beside the repo -------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(
    ("folder", "task", "sizes", "first_metric"),
    [("SST-2", "sst2", (67_349, 872), "accuracy"), ("CoLA", "cola", (8_551, 1_043), "mcc")],
)
def test_real_glue_data(folder, task, sizes, first_metric):
    if not (GLUE / folder / "train.tsv").is_file():
        pytest.skip(f"the GLUE copy is not beside the repo ({GLUE / folder})")
    data: TaskData = load_task(task, GLUE / folder)
    assert (len(data.train), len(data.dev)) == sizes
    assert data.labels == ("0", "1")
    assert data.metrics[0] == first_metric
    assert not data.is_pair
    subset = load_task(task, GLUE / folder, max_train_samples=8000)
    assert subset.source.endswith(f"(train: 8000 of {sizes[0]}, seed 0; dev: {sizes[1]})")
