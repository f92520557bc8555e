"""End to end on a small labeled input: the funnel accounts for every record, the shards and the
report are byte-identical across runs, across worker counts and (test_curate_beam.py) runners."""

import filecmp
import json
import pathlib

import pytest

from conftest import web_page, write_jsonl
from lmforge.data.curate import CurateConfig, InputConfig, OutputConfig, read_shards, run_curate

# (text, stage/reason it must be dropped for, or "" if kept)
LABELED = [
    (web_page(1), ""),
    (web_page(2), ""),
    (web_page(3) + "\nWrite to jane.doe@example.com or call 555-201-3344.", ""),  # kept, PII rewritten
    (web_page(1), "exact_dedup/duplicate"),
    (web_page(2).upper(), "exact_dedup/duplicate"),  # case does not matter
    (web_page(2).replace(" the ", " a ", 3) + " One more sentence was added here.", "near_dedup/near_duplicate"),
    ("Der Fluss in der alten Stadt ist seit vielen Jahren ein Teil des Lebens. " * 8, "language/other_language"),
    ("the cat sat with a dog.", "gopher_quality/few_words"),
    (web_page(4) + "\nLorem ipsum dolor sit amet.", "c4/lorem_ipsum"),
    (web_page(5) + "\nYou are a stupid fucking idiot.\nShut up, you worthless piece of shit.", "safety/toxic"),
    ("   \n  ", "read/empty"),
    ("{broken json", "read/malformed_json"),
    (web_page(6), ""),
]


@pytest.fixture
def input_file(tmp_path) -> pathlib.Path:
    return write_jsonl(tmp_path / "in.jsonl",
                       [t if reason == "read/malformed_json" else {"text": t, "id": f"doc{i}"}
                        for i, (t, reason) in enumerate(LABELED)])


def config(path, **kw):
    return CurateConfig(inputs=(InputConfig(paths=(str(path),), source="web"),), workers=1,
                        output=OutputConfig(num_shards=3), **kw)


def test_funnel_counts_every_record_and_drops_by_label(input_file, tmp_path):
    metrics = run_curate(config(input_file), tmp_path / "run")
    funnel = json.loads((tmp_path / "run" / "funnel.json").read_text())
    want = {}
    for _, reason in LABELED:
        if reason:
            want[reason] = want.get(reason, 0) + 1
    assert {k: v["documents"] for k, v in funnel["drops"].items()} == want
    kept = sum(not r for _, r in LABELED)
    assert funnel["input"]["documents"] == len(LABELED) == kept + sum(want.values())
    assert funnel["left"][-1]["documents"] == kept == metrics["curate/output_documents"]
    assert [row["documents"] for row in funnel["left"]] == sorted((row["documents"] for row in funnel["left"]), reverse=True)
    assert funnel["rewrites"]["pii/EMAIL"] == 1 and funnel["rewrites"]["pii/PHONE"] == 1
    docs = sorted(read_shards(tmp_path / "run" / "data"), key=lambda d: d.id)
    assert [d.id for d in docs] == ["doc0", "doc1", "doc12", "doc2"]
    assert "<EMAIL>" in docs[3].text and "<PHONE>" in docs[3].text and docs[3].metadata["language"] == "en"
    report = (tmp_path / "run" / "report.md").read_text()
    for needle in ("![funnel](funnel.png)", "| near_dedup |", "## Top drop reasons", "### safety/toxic",
                   "[doc9] ", f"{input_file}:12", f"near-duplicate of {input_file}:2"):
        assert needle in report, needle
    assert (tmp_path / "run" / "funnel.png").stat().st_size > 1000


def _same_tree(a: pathlib.Path, b: pathlib.Path, names=("report.md", "funnel.json")):
    shards = sorted(p.name for p in (a / "data").iterdir())
    assert shards and shards == sorted(p.name for p in (b / "data").iterdir())
    for name in shards:
        assert filecmp.cmp(a / "data" / name, b / "data" / name, shallow=False), name
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("fmt", ["jsonl.zst", "parquet", "arrayrecord"])
def test_byte_identical_across_runs_and_worker_counts(input_file, tmp_path, fmt):
    cfg = config(input_file)
    cfg = CurateConfig(**{**cfg.__dict__, "output": OutputConfig(format=fmt, num_shards=3)})
    run_curate(cfg, tmp_path / "a")
    run_curate(cfg, tmp_path / "b")
    _same_tree(tmp_path / "a", tmp_path / "b")
    assert sum(1 for _ in read_shards(tmp_path / "a" / "data")) == 4


@pytest.mark.slow
def test_multiprocessing_matches_one_process(input_file, tmp_path):
    one = config(input_file)
    two = CurateConfig(**{**one.__dict__, "workers": 2, "chunk_size": 2})
    run_curate(one, tmp_path / "a")
    run_curate(two, tmp_path / "b")
    _same_tree(tmp_path / "a", tmp_path / "b")


def test_fail_policy_stops_the_run_with_file_and_line(input_file, tmp_path):
    cfg = CurateConfig(inputs=(InputConfig(paths=(str(input_file),), on_bad_record="fail"),), workers=1)
    with pytest.raises(ValueError, match=rf"{input_file}:12: invalid JSON"):
        run_curate(cfg, tmp_path / "run")
