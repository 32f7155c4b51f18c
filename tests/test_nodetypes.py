"""Which node timed every figure, and the refusal to compare figures of two CPU models."""

from __future__ import annotations

import json
from pathlib import Path

from hpcagents.views.nodetypes import figures, main, mixed_kernels


def _figure(results: Path, rel: str, node: str, cpu: str) -> None:
    path = results / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = {"host": "h", "cpu_model": cpu, "slurm_job_id": "7", "slurm": {"node": node}}
    path.write_text(json.dumps({"kernel": rel.split("/")[0], "provenance": prov}))


def test_every_figure_names_its_node_and_one_cpu_model_passes(tmp_path, capsys):
    _figure(tmp_path, "dgemm/iter0/pg0/attempt0/evaluation.json", "n1", "Xeon A")
    _figure(tmp_path, "dgemm/iter1/pg1/attempt0/evaluation.json", "n2", "Xeon A")
    _figure(tmp_path, "dgemm/iter1/final_round.json", "n2", "Xeon A")
    (tmp_path / "dgemm/iter1/pg2/attempt0").mkdir(parents=True)
    (tmp_path / "dgemm/iter1/pg2/attempt0/evaluation.json").write_text("{half")
    assert [f.node for f in figures(tmp_path)] == ["n1", "n2", "n2"]
    assert main([str(tmp_path), "--all"]) == 0
    out = capsys.readouterr().out
    assert "dgemm: 3 figures on Xeon A (nodes n1, n2)" in out
    assert "dgemm/iter1/final_round.json: node n2, Slurm job 7" in out


def test_figures_of_two_cpu_models_in_one_kernel_are_flagged_and_fail(tmp_path, capsys):
    _figure(tmp_path, "dgemm/iter0/pg0/attempt0/evaluation.json", "n1", "Xeon A")
    _figure(tmp_path, "dgemm/iter1/pg1/attempt0/evaluation.json", "n9", "EPYC B")
    _figure(tmp_path, "dgemv/iter0/pg0/attempt0/evaluation.json", "n9", "EPYC B")
    assert mixed_kernels(figures(tmp_path)) == {"dgemm": {"Xeon A", "EPYC B"}}
    assert main([str(tmp_path)]) == 1
    assert "dgemm: figures from 2 CPU models" in capsys.readouterr().out
