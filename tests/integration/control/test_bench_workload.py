"""`rlm-rs bench workload` end to end at small sizes (no timing asserts):
every task's RLM-RS cell is answered correctly through the real stack, the
scripted root model follows each system's turns, and the table renders."""

from __future__ import annotations

import argparse
import json

from rlm_rs.bench import workload
from rlm_rs.bench.cli import register
from rlm_rs.bench.workload import count_complaints, needle_corpus, records_corpus


def test_corpora_are_seeded_and_their_truth_is_what_the_sub_model_counts() -> None:
    assert needle_corpus(0.05, 3) == needle_corpus(0.05, 3)
    assert needle_corpus(0.05, 3).count("access code is") == 1
    text, truth = records_corpus(300, 5)
    assert (text, truth) == records_corpus(300, 5)
    assert count_complaints(text) == truth > 0


def test_bench_workload_small_sizes_every_cell_correct() -> None:
    parser = argparse.ArgumentParser()
    workload.add_arguments(parser)
    args = parser.parse_args(
        ["--rlms", "off", "--sandbox", "in-process", "--needle-mb", "0.05", "--records", "120",
         "--depth2-records", "50", "--edge-records", "30", "--sub-latency", "0"]
    )  # fmt: skip
    result = workload.run(args)
    rows = result["rows"]
    assert set(rows) == {"needle-0.05mb", "aggregate-120", "depth2", "edge-30"}
    for name, row in rows.items():
        ours = row["rlm_rs"]
        assert ours["correct"], (name, ours)
        assert ours["answer"] == row["truth"]
        assert row["rlms"]["seconds"] is None and row["rlms"]["error"] == "not run (--rlms off)"
    assert rows["aggregate-120"]["rlm_rs"]["sub_calls"] == 3  # 50 records per batched sub-call
    assert rows["edge-30"]["rlm_rs"]["sub_calls"] == 30
    assert rows["depth2"]["rlm_rs"]["root_calls"] > rows["depth2"]["rlm_rs"]["turns"]  # children's turns
    json.dumps(result)  # --json prints it
    table = workload.render(result)
    assert "| task | RLM-RS | rlms | RLM-RS / rlms |" in table
    assert table.count(", correct,") == 4 and "not run (--rlms off)" in table


def test_the_bench_command_is_registered() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["bench", "workload", "--rlms", "off", "--records", "10,20"])
    assert args.records == [10, 20] and args.rlms == "off" and callable(args.func)
