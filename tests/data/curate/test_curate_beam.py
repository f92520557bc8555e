"""The Beam runner (DirectRunner) writes byte-identical shards and report to the local runner."""

import pytest

pytest.importorskip("apache_beam", reason="the beam extra is not installed (pip install -e '.[beam]')")

from test_curate_pipeline import LABELED, _same_tree, config  # noqa: E402  (shared labeled input)

from conftest import write_jsonl  # noqa: E402
from lmforge.data.curate import CurateConfig, OutputConfig, run_curate  # noqa: E402


def test_beam_matches_local_byte_for_byte(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [t if r == "read/malformed_json" else {"text": t, "id": f"doc{i}"}
                                               for i, (t, r) in enumerate(LABELED)])
    local = config(path)
    beam = CurateConfig(**{**local.__dict__, "runner": "beam"})
    run_curate(local, tmp_path / "local")
    metrics = run_curate(beam, tmp_path / "beam")
    assert metrics["curate/output_documents"] == 4
    _same_tree(tmp_path / "local", tmp_path / "beam")
    # Dedup off and one shard: the graph without the dedup branches.
    plain = CurateConfig(**{**local.__dict__, "output": OutputConfig(num_shards=1)})
    plain = CurateConfig(**{**plain.__dict__, "exact_dedup": type(plain.exact_dedup)(enabled=False),
                            "near_dedup": type(plain.near_dedup)(enabled=False)})
    run_curate(plain, tmp_path / "plain_local")
    run_curate(CurateConfig(**{**plain.__dict__, "runner": "beam"}), tmp_path / "plain_beam")
    _same_tree(tmp_path / "plain_local", tmp_path / "plain_beam")
