"""Preparing the output directory of a run."""

from beam_tally.runtime import prepare_output


def test_a_run_replaces_an_earlier_runs_outputs_and_nothing_else(tmp_path):
    for name in ("stats.jsonl", "stats-20261123T000000-ab.jsonl", "alerts.jsonl"):
        (tmp_path / name).write_text("old\n")
    for name in ("stats_notes.jsonl", "notes.txt"):
        (tmp_path / name).write_text("mine\n")
    prepare_output(str(tmp_path), ("stats.jsonl", "alerts.jsonl", "dead_letters.jsonl"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "stats_notes.jsonl"]


def test_a_missing_output_directory_is_created(tmp_path):
    prepare_output(str(tmp_path / "a" / "b"), ("stats.jsonl",))
    assert (tmp_path / "a" / "b").is_dir()
