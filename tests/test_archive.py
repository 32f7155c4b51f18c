"""The archive of elites: every valid kernel kept across iterations, with its figures,
strategy, code hash and lineage, and what the PM and PGs are shown of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hpcagents.campaign.archive import proven_wrong, update_archive
from hpcagents.campaign.select import Attempt
from hpcagents.core.artifacts import REPO_DIR, validate
from hpcagents.llm.agents import (
    archive_text,
    fit_pm,
    inspiration_for,
    pg_messages,
    pm_messages,
)

sys.path.insert(0, str(REPO_DIR / "tests" / "data"))
import greedy_prompts  # noqa: E402

KERNEL_SOURCE = "k.c"


def _attempt(root: Path, it: int, pg: int, a: int, strategy: str, pct: float | None, code: str):
    d = root / f"iter{it}" / f"pg{pg}" / f"attempt{a}"
    d.mkdir(parents=True)
    (d / KERNEL_SOURCE).write_text(code)
    gen = {
        "iteration": it,
        "pg": pg,
        "attempt": a,
        "strategy": strategy,
        "strategy_description": f"{strategy} as planned",
        "source_sha256": f"sha-{code}",
    }
    ok = pct is not None
    ev = {
        "status": "ok" if ok else "wrong_answer",
        "source_sha256": f"sha-{code}",
        "timing": {"gflops": pct / 2, "best_s": 1 / pct} if ok else None,
        "pct_of_reference": pct,
        "reference": {"gflops": 50.0},
    }
    return Attempt(d, gen, ev)


def _best(it: int, pg: int, a: int, changed: bool, reason: str) -> dict:
    return {
        "selected": {"iteration": it, "pg": pg, "attempt": a},
        "changed": changed,
        "reason": reason,
        "source_sha256": "x",
    }


def _entry(label: str, pct: float | None, status: str = "ok") -> dict:
    ok = status == "ok"
    return {
        "label": label,
        "status": status,
        "reason": "" if ok else "C[1,2] differs",
        "gflops": pct / 2 if ok else None,
        "best_s": 1.0 if ok else None,
        "median_s": 1.0 if ok else None,
        "pct_of_reference": pct if ok else None,
        "runs_s": [1.0] if ok else [],
    }


def _round(it: int, *entries: dict, ratios: dict[str, float]) -> dict:
    comps = [{"label": k, "median_ratio": v, "wins": 5} for k, v in ratios.items()]
    return {
        "iteration": it,
        "rounds": 6,
        "max_rounds": 15,
        "reference": {"gflops": 50.0},
        "contenders": list(entries),
        "verdict": {"comparisons": comps},
    }


def campaign(tmp_path: Path) -> tuple[dict, dict, dict]:
    """Three iterations' archives: baseline; iteration 1 crowns pg2; iteration 2 keeps it."""
    base = _attempt(tmp_path, 0, 0, 0, "baseline", 2.0, "base")
    a0 = update_archive("k", 0, None, _best(0, 0, 0, True, "baseline"), {0: [base]}, "k.c")
    p1 = _attempt(tmp_path, 1, 1, 0, "loop_reorder", 40.0, "loop")
    p2 = _attempt(tmp_path, 1, 2, 1, "register_blocking", 90.0, "regs")
    p3 = _attempt(tmp_path, 1, 3, 0, "typo", None, "typo")
    p4 = _attempt(tmp_path, 1, 4, 0, "same_as_baseline", 2.1, "base")  # same code: no new elite
    fr1 = _round(
        1,
        _entry("incumbent", 2.0),
        _entry("pg2", 80.0),
        _entry("pg1", 35.0),
        ratios={"pg2": 0.025, "pg1": 0.06},
    )
    a1 = update_archive(
        "k",
        1,
        a0,
        _best(1, 2, 1, True, "pg2 is faster"),
        {1: [p1], 2: [p2], 3: [p3], 4: [p4]},
        "k.c",
        fr1,
    )
    q1 = _attempt(tmp_path, 2, 1, 0, "packed_b", 85.0, "packed")
    fr2 = _round(
        2, _entry("incumbent", 82.0), _entry("pg1", 70.0, status="wrong_answer"), ratios={}
    )
    a2 = update_archive(
        "k", 2, a1, _best(1, 2, 1, False, "no finalist passed"), {1: [q1]}, "k.c", fr2
    )
    return a0, a1, a2


def test_every_valid_kernel_is_kept_across_iterations_with_figures_and_lineage(tmp_path):
    a0, a1, a2 = campaign(tmp_path)
    for a in (a0, a1, a2):
        validate(json.loads(json.dumps(a)), "archive")
    ids = [e["id"] for e in a2["elites"]]
    # ranked by % of the reference (side by side where known), the failed one absent,
    # and so is iteration 2's pg1: the final round proved it wrong (wrong_answer)
    assert ids == [
        "iter1/pg2/attempt1",
        "iter1/pg1/attempt0",
        "iter0/pg0/attempt0",
    ]
    by = {e["id"]: e for e in a2["elites"]}
    assert a2["incumbent"] == "iter1/pg2/attempt1" and by["iter1/pg2/attempt1"]["is_incumbent"]
    # lineage: iteration 1 started from the baseline, iteration 2 from iteration 1's best
    assert by["iter1/pg1/attempt0"]["parent"] == "iter0/pg0/attempt0"
    assert "iter2/pg1/attempt0" not in by  # proven wrong: never shown to the PM as an elite
    # the incumbent's figure is refreshed by the round that re-timed it
    assert by["iter1/pg2/attempt1"]["side_by_side"]["iteration"] == 2
    assert by["iter1/pg2/attempt1"]["side_by_side"]["pct_of_reference"] == 82.0
    # the same code twice is one elite
    assert by["iter0/pg0/attempt0"]["duplicates"] == ["iter1/pg4/attempt0"]
    assert a2["last_round"]["reason"] == "no finalist passed"


def test_the_pm_sees_the_elites_their_code_and_the_last_final_round(tmp_path):
    _, a1, _ = campaign(tmp_path)
    text = archive_text(a1)
    assert 'iter1/pg2/attempt1 "register_blocking" (the current best' in text
    assert "side by side in iteration 1's final round" in text
    # the code of the best two that are not the incumbent, never a path
    assert "```c\nloop\n```" in text and "```c\nbase\n```" in text
    assert str(tmp_path) not in text
    assert "## The last final round (iteration 1" in text
    assert "Decision (the incumbent was replaced): pg2 is faster" in text
    assert "median over the rounds: 0.025" in text


def test_the_pm_sees_what_the_compiler_said_about_each_elite(tmp_path):
    base = _attempt(tmp_path, 0, 0, 0, "baseline", 2.0, "base")
    base.evaluation["optreport"] = {
        "status": "ok",
        "text": "loop at line 9: not vectorised: complicated access pattern  | C[i*ldc+j] += a",
    }
    a0 = update_archive("k", 0, None, _best(0, 0, 0, True, "baseline"), {0: [base]}, "k.c")
    p1 = _attempt(tmp_path, 1, 1, 0, "simd", 40.0, "simd")  # no report: none shown
    a1 = update_archive("k", 1, a0, _best(1, 1, 0, True, "pg1"), {1: [p1]}, "k.c")
    validate(json.loads(json.dumps(a1)), "archive")
    by = {e["id"]: e for e in a1["elites"]}
    assert by["iter1/pg1/attempt0"]["compiler_report"] is None
    text = archive_text(a1)
    entry = text.split("2. iter0/pg0/attempt0")[1].split("\n### ")[0]
    assert "What the compiler said (vectorisation):" in entry
    assert "   loop at line 9: not vectorised: complicated access pattern" in entry
    assert text.count("What the compiler said") == 1


def test_no_host_directory_reaches_a_prompt_whatever_record_carries_it(tmp_path, monkeypatch):
    from hpcagents.llm.agents import render

    monkeypatch.chdir(tmp_path)
    leaked = f"the baseline {tmp_path}/kernels/k/k.c and {REPO_DIR}/kernels/dgemm/dgemm.c"
    text = render("pm", **{k: leaked for k in _pm_keys()})
    assert str(tmp_path) not in text and str(REPO_DIR) not in text
    assert "the baseline kernels/k/k.c and kernels/dgemm/dgemm.c" in text
    # a C division by a variable that shares a directory's name is code, not a path
    for code in ("q = y/tmp;", "q = (a + b)/tmp;", "r = (x)/root/2.0;"):
        assert render("pm", **{k: code for k in _pm_keys()}).count(code) >= 1, code


def _pm_keys() -> list[str]:
    import re

    template = (REPO_DIR / "workflow" / "prompts" / "pm.txt").read_text()
    return sorted(set(re.findall(r"\$\{?(\w+)\}?", template)))


def test_the_pm_may_name_the_elite_a_strategy_builds_on_and_its_pg_sees_that_one(tmp_path):
    from hpcagents.llm.agents import check_plan, inspiration_text, plan_schema

    _, a1, _ = campaign(tmp_path)
    text = archive_text(a1)
    assert '"inspiration": its number in the list above' in text
    # greedy search sends the seed's schema; the archive's allows the field
    assert "inspiration" not in json.dumps(plan_schema(2))
    assert plan_schema(2, archive=True)["properties"]["strategies"]["items"]["properties"][
        "inspiration"
    ] == {"type": "integer", "minimum": 1}
    answer = {
        "strategies": [
            {"name": "combine", "description": "take 3's loop order", "inspiration": 3},
            {"name": "plain", "description": "unroll"},
        ]
    }
    plan = check_plan(answer, 2, a1)
    third = a1["elites"][2]["id"]
    assert plan[0]["inspiration"] == third and "inspiration" not in plan[1]
    # a number outside the list is an error the PM is asked to correct
    answer["strategies"][0]["inspiration"] = 9
    with pytest.raises(ValueError, match="inspiration 9 is not a number of the archive's list"):
        check_plan(answer, 2, a1)
    # greedy: the field is ignored
    assert "inspiration" not in check_plan(answer, 2, None)[0]
    # the PG of that strategy sees the named elite, said to be the planner's choice
    elite = inspiration_for(a1, 1, plan[0]["inspiration"])
    assert elite["id"] == third and elite["named_by_pm"]
    assert "the planner's choice" in inspiration_text(elite)
    assert "not from this one" in inspiration_text(inspiration_for(a1, 1))


def test_each_pg_gets_another_elite_as_inspiration(tmp_path):
    _, a1, _ = campaign(tmp_path)
    picks = [inspiration_for(a1, pg)["id"] for pg in (1, 2, 3)]
    assert picks == ["iter1/pg1/attempt0", "iter0/pg0/attempt0", "iter1/pg1/attempt0"]
    assert inspiration_for(None, 1) is None
    g = greedy_prompts
    kernel = g.load_kernel("dgemm")
    msgs = pg_messages(
        kernel,
        g.BUILD,
        2,
        1,
        0,
        {"name": "x", "description": "y"},
        g.BEST,
        "int x;",
        None,
        inspiration=inspiration_for(a1, 1),
    )
    assert "## Another kernel from the team's archive, for ideas" in msgs[1]["content"]
    assert "```c\nloop\n```" in msgs[1]["content"]


def test_greedy_search_renders_the_seeds_prompts_byte_for_byte():
    want = json.loads((REPO_DIR / "tests" / "data" / "greedy_prompts.json").read_text())
    assert json.loads(json.dumps(greedy_prompts.rendered())) == want


def test_a_tight_budget_drops_the_elites_code_before_the_history(tmp_path):
    _, a1, _ = campaign(tmp_path)
    g = greedy_prompts
    kernel = g.load_kernel("dgemm")
    source = (kernel.directory / kernel.source).read_text()
    full = pm_messages(kernel, g.BUILD, 2, 4, g.BEST, source, archive=a1)
    none = pm_messages(kernel, g.BUILD, 2, 4, g.BEST, source, archive=a1, elite_code_shown=0)
    budget = (sum(len(m["content"]) for m in none) // 3) + 20
    messages, context = fit_pm(kernel, g.BUILD, 2, 4, g.BEST, source, budget, a1)
    assert messages == none and context["elite_code_shown"] == 0
    assert context["history_entries_cut"] == 0 and full != none


def test_code_the_final_round_or_its_scale_check_proved_wrong_is_never_an_elite():
    fr = {
        "contenders": [
            {"label": "pg1", "status": "timeout"},  # slow or unlucky, not wrong
            {"label": "pg2", "status": "ok"},
        ],
        "scale_check": {"contenders": [{"label": "pg2", "status": "wrong_answer"}]},
    }
    assert proven_wrong("pg2", fr)  # right at the bench size, wrong at twice it
    assert not proven_wrong("pg1", fr) and not proven_wrong("pg3", fr)
    assert not proven_wrong("pg1", None)
