"""``hpcagents`` command line: the user-facing commands and the steps the rules call.

A step that fails for a reason the user can act on (no server, bad config, baseline
broken) prints one ``hpcagents: error: …`` line and exits 2; it never leaves a partial
artifact behind (every artifact is written atomically).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from hpcagents.core.artifacts import REPO_DIR
from hpcagents.core.layout import RESULTS, CampaignLayout
from hpcagents.spec.config import ConfigError

#: The command that serves the scripted model (a stand-in for an LLM).
SCRIPTED = "scripted-model"


def _cfg(args: argparse.Namespace):  # noqa: ANN202 - CampaignConfig
    """The config of ``--config``: a run's effective record (frozen at its start, read
    without validating again) or a config file (validated)."""
    from hpcagents.spec.effective import load_step_config

    return load_step_config(args.config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from hpcagents.llm.probe import check_servers, print_warnings

    cfg = _cfg(args)
    if args.servers:
        print_warnings(check_servers(cfg))
    print(f"config OK: kernels {', '.join(cfg.kernels)}; {len(cfg.llm.servers)} server(s)")
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from hpcagents.campaign.steps import baseline

    baseline(_cfg(args), args.kernel, Path(args.baseline), Path(args.source), Path(args.out))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from hpcagents.campaign.steps import plan

    plan(
        _cfg(args),
        args.kernel,
        args.iteration,
        Path(args.best),
        Path(args.out),
        Path(args.archive) if args.archive else None,
    )
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from hpcagents.campaign.steps import FailedAttempt, generate

    failed = None
    if args.failed_evaluation:
        failed = FailedAttempt(
            Path(args.failed_evaluation), Path(args.failed_generation), Path(args.failed_source)
        )
    generate(
        _cfg(args),
        args.kernel,
        args.iteration,
        args.pg,
        args.attempt,
        Path(args.plan),
        Path(args.source),
        Path(args.out),
        failed,
    )
    return 0


def _cmd_evaluate_attempt(args: argparse.Namespace) -> int:
    from hpcagents.campaign.steps import evaluate_attempt

    rec = evaluate_attempt(
        _cfg(args), args.kernel, Path(args.source), Path(args.generation), Path(args.out)
    )
    print(f"{args.out}: {rec['status']} {rec.get('reason', '')}".rstrip())
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from hpcagents.campaign.select import select_iteration
    from hpcagents.core.artifacts import read_json

    kernel = _cfg(args).kernel(args.kernel)
    if args.final_round:  # after the baseline: the final round lists every PG's chain end
        ends = read_json(args.final_round, "final_round")["finals"]
        finals = [Path(end["evaluation"]) for end in ends]
    else:
        finals = [Path(p) for p in args.finals]
    rec = select_iteration(
        args.kernel,
        args.iteration,
        finals,
        Path(args.previous) if args.previous else None,
        Path(args.out),
        kernel.source,
        Path(args.final_round) if args.final_round else None,
        best_source=Path(args.best_source),
        archive=Path(args.archive),
        previous_archive=Path(args.previous_archive) if args.previous_archive else None,
    )
    print(f"{args.kernel} iteration {args.iteration}: {rec['reason']}")
    return 0


def _cmd_final_round(args: argparse.Namespace) -> int:
    from hpcagents.campaign.steps import final_round_step

    rec = final_round_step(
        _cfg(args),
        args.kernel,
        args.iteration,
        [Path(p) for p in args.evaluations],
        Path(args.previous),
        Path(args.out),
    )
    for c in rec["contenders"]:
        figure = f"{c['gflops']:.2f} GFLOP/s" if c["status"] == "ok" else c["reason"]
        print(f"{c['label']}: {c['status']} {figure}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from hpcagents.views.summary import write_summary

    text = write_summary(
        _cfg(args),
        args.kernel,
        Path(args.kernel_dir),
        [Path(b) for b in args.bests],
        Path(args.out),
        Path(args.report),
    )
    print(text)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hpcagents.views.report import kernel_dirs_under, write_report

    if args.kernel_dir:
        dirs = [Path(d) for d in args.kernel_dir]
    else:
        dirs = kernel_dirs_under(Path(args.results))
        if args.kernel:
            dirs = [d for d in dirs if d.name in args.kernel]
    if not dirs:
        raise ConfigError(
            f"no finished campaign under {args.results} (no <kernel>/summary.json): run the "
            "campaign first, or pass --results <campaign dir>/results"
        )
    if args.out:
        print(write_report(dirs, Path(args.out)))
    else:
        for d in dirs:
            print(write_report([d], d / "report.html"))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from hpcagents.views.status import run_status

    return run_status(args)


def _cmd_study(args: argparse.Namespace) -> int:
    from hpcagents.views.study import run_study

    return run_study(args)


def _cmd_suite(args: argparse.Namespace) -> int:
    from hpcagents.views.suite import run_suite

    return run_suite(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hpcagents.judge.evaluate import run_evaluate

    return run_evaluate(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from hpcagents.cluster.run import run_campaign

    return run_campaign(args)


def _cmd_machine(args: argparse.Namespace) -> int:
    import json

    from hpcagents.judge.machine import (
        MachineError,
        default_cache_dir,
        describe,
        machine_model,
        usable_cores,
    )

    cc, cflags, threads = "gcc", ("-O3", "-march=native", "-fopenmp"), None
    if args.config:
        cfg = _cfg(args)
        cc, cflags, threads = cfg.cc, cfg.cflags, cfg.threads
    cc = args.cc or cc
    cflags = tuple(args.cflags.split()) if args.cflags is not None else cflags
    threads = args.threads or threads or usable_cores()
    try:
        cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        model = machine_model(cache_dir, cc, cflags, threads, refresh=args.refresh)
    except MachineError as exc:
        print(f"hpcagents: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(model.to_dict(), indent=2) if args.json else describe(model))
    return 0


def _cmd_new_kernel(args: argparse.Namespace) -> int:
    from hpcagents.spec.kernelspec import find_blanks
    from hpcagents.spec.newkernel import new_kernel

    folder = new_kernel(
        args.name, Path(args.source), args.function, Path(args.kernels_dir), force=args.force
    )
    import yaml

    blanks = find_blanks(yaml.safe_load((folder / "kernel.yaml").read_text()))
    print(
        f"wrote {folder}/: {args.name}.c (the baseline the agents edit), original.c (the "
        f"reference, your code as given) and kernel.yaml with {len(blanks)} blank(s) to fill "
        "in (values starting with FILL_ME):"
    )
    for key, what in blanks:
        print(f"  - {key}: {what}")
    from hpcagents.spec.newkernel import function_body, neighbour_reads

    reads = neighbour_reads(function_body(Path(args.source).read_text(), args.function))
    if reads:
        print(
            f"stencil: {args.function} reads neighbours ({', '.join(reads)}): give each array "
            "its extent with the halo rows/planes (e.g. nz + 2, ny + 2, nx + 2) and count "
            "the halos in bytes"
        )
    print(
        "validation runs exactly the sizes under `cases:` (every output element against "
        "your original) before any timing: include 1, odd sizes and sizes that are not "
        "multiples of 8; `bytes:` gives the GB/s shown for a memory-bound kernel"
    )
    builtin = Path(args.kernels_dir).resolve() == (REPO_DIR / "kernels").resolve()
    where = "" if builtin else f" --kernels-dir {folder.parent}"
    print(
        f"then check it: hpcagents evaluate --kernel {args.name}{where} --source "
        f"{folder / (args.name + '.c')} (the baseline against your original), and add "
        f"{args.name} to `kernels:` in config/config.yaml"
        + ("" if builtin else f" with `kernels_dir: {folder.parent}`")
        + f". A campaign on {args.name} needs a real model: the scripted stand-in has no "
        "variants for it."
    )
    return 0


def _cmd_pilot(args: argparse.Namespace) -> int:
    from hpcagents.cluster.pilot import serve

    return serve(
        Path(args.dir), args.runtime_min, args.reserve_min, args.idle_s, args.only, pool=args.pool
    )


def _cmd_hand_over(args: argparse.Namespace) -> int:
    from hpcagents.cluster.pilot import Paths, PilotError, PilotResources, hand_over, parse_extra

    argv = [a for a in args.argv if a != "--"] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print("hpcagents hand-over: no command given after --", file=sys.stderr)
        return 2
    res = PilotResources(
        partition=args.partition or None,
        account=args.account or None,
        cpus_per_task=args.cpus_per_task or None,
        mem_mb=args.mem_mb or None,
        runtime_min=args.pilot_runtime,
        eval_runtime_min=args.runtime,
        idle_s=args.idle_s,
        extra=parse_extra(args.slurm_extra),
        max_nodes=args.max_nodes,
    )
    try:
        return hand_over(Paths(Path(args.dir)), argv, res)
    except PilotError as exc:
        print(f"hpcagents: error: {exc}", file=sys.stderr)
        return 2


def _cmd_launched_server(args: argparse.Namespace) -> int:
    from hpcagents.cluster.launch import serve_launched

    return serve_launched(Path(args.addr_file), args.command, args.model, args.instance)


def _cmd_demo(args: argparse.Namespace) -> int:
    from hpcagents.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpcagents",
        description="Local-LLM agent team that optimises HPC kernels (Snakemake campaign).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str):
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        return p

    from hpcagents.judge.evaluate import add_evaluate_arguments

    add_evaluate_arguments(
        add(
            "evaluate",
            _cmd_evaluate,
            "compile, validate and time one C source against a kernel's reference",
        )
    )
    # Listed here for --help only: main() hands ``scripted-model`` and its options to the
    # stand-in's own parser, so no other command (no Snakemake job) loads the stand-in.
    sub.add_parser(
        SCRIPTED,
        help="serve the scripted model (a stand-in for an LLM, not a model) over HTTP; "
        f"its options: hpcagents {SCRIPTED} --help",
        add_help=False,
    )
    from hpcagents.cluster.run import add_arguments as add_run_arguments

    add_run_arguments(
        add(
            "run",
            _cmd_run,
            "start or resume the campaign of this directory (same command after a kill)",
        )
    )
    p = add("demo", _cmd_demo, "run the demo campaign on the scripted model (local executor)")
    p.add_argument(
        "--config",
        help="campaign config, relative to the current directory (default: "
        "./config/config.yaml, else the checkout's documented one)",
    )
    p.add_argument("--dir", help="the folder results/ goes in (default: the current one)")
    p.add_argument(
        "--accept-changes",
        action="store_true",
        help="accept settings that change figures on existing results (made again)",
    )
    p.add_argument("--port", type=int, default=0, help="scripted model port (0: any free one)")
    p.add_argument("--latency", type=float, default=0.2, help="scripted model latency (s)")
    p.add_argument(
        "--cores", help="Snakemake's --cores (default: the profile's job cap, profiles/default)"
    )
    p.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments (after --)")

    p = add(
        "machine",
        _cmd_machine,
        "measure (once, then cached) peak FP64 FLOP/s and STREAM bandwidth of this host",
    )
    p.add_argument("--config", help="take cc, cflags and threads from this campaign config")
    p.add_argument("--cc", help="compiler (default gcc, or the config's build.cc)")
    p.add_argument("--cflags", help="flags as one string (default -O3 -march=native -fopenmp)")
    p.add_argument("--threads", type=int, help="OpenMP threads (default: all usable cores)")
    p.add_argument(
        "--cache-dir",
        help=f"default {CampaignLayout().machine_cache()} (or $HPCAGENTS_MACHINE_CACHE)",
    )
    p.add_argument("--refresh", action="store_true", help="measure again, replacing the cache")
    p.add_argument("--json", action="store_true", help="print the model as JSON")

    p = add(
        "report",
        _cmd_report,
        "write the self-contained HTML report of finished campaigns (plots embedded)",
    )
    p.add_argument("--results", default=str(RESULTS), help="a campaign's results directory")
    p.add_argument("--kernel", action="append", help="only these kernels (repeatable)")
    p.add_argument("--kernel-dir", action="append", help="a kernel's results directory")
    p.add_argument(
        "--out", help="one page for all kernels here (default: <results>/<kernel>/report.html)"
    )

    from hpcagents.views.status import add_arguments as add_status_arguments
    from hpcagents.views.study import add_arguments as add_study_arguments
    from hpcagents.views.suite import add_arguments as add_suite_arguments

    add_status_arguments(
        add(
            "status",
            _cmd_status,
            "where a running (or crashed) campaign is: iteration, PGs in flight, best, failures",
        )
    )
    add_study_arguments(
        add(
            "study",
            _cmd_study,
            "the 1/2/4/8-PG study: one campaign per N and repeat, then a figure and a table",
        )
    )
    add_suite_arguments(
        add(
            "suite",
            _cmd_suite,
            "run the scripted campaign on every kernel with a scripted/ set; one table",
        )
    )

    p = add(
        "new-kernel",
        _cmd_new_kernel,
        "start a kernel folder from a C function of your own (blanks marked FILL_ME)",
    )
    p.add_argument("name", help="the kernel's name: its folder under --kernels-dir")
    p.add_argument("--from", dest="source", required=True, help="your C file")
    p.add_argument("--function", required=True, help="the function in it to optimise")
    p.add_argument(
        "--kernels-dir",
        default=str(REPO_DIR / "kernels"),
        help="where kernel folders live (default: this checkout's kernels/; a folder of "
        "your own is found by campaigns naming it as kernels_dir, and by hpcagents "
        "evaluate --kernels-dir)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing folder")

    p = add("pilot", _cmd_pilot, "inside a Slurm job: run the evaluations handed to it")
    p.add_argument("--dir", required=True, help="the campaign's pilot directory")
    p.add_argument("--runtime-min", type=float, required=True, help="the job's time limit")
    p.add_argument("--reserve-min", type=float, default=30, help="stop taking work this early")
    p.add_argument("--idle-s", type=float, default=120, help="stop after this long idle")
    p.add_argument("--only", help="serve this one request, then stop (a retry alone)")
    p.add_argument("--pool", help="serve only this pool's requests (one node type)")
    p = add(
        "hand-over",
        _cmd_hand_over,
        "step wrapper under Slurm: hand a command to the campaign's pilot pool and wait",
    )
    p.add_argument("--dir", default=str(CampaignLayout().pilot()))
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--cpus-per-task", type=int)
    p.add_argument("--mem-mb", type=int)
    p.add_argument("--runtime", type=int, default=30, help="minutes one evaluation may take")
    p.add_argument("--pilot-runtime", type=int, default=240, help="the pilot's time (min)")
    p.add_argument("--idle-s", type=float, default=120)
    p.add_argument("--slurm-extra", help="extra sbatch options, e.g. --exclusive")
    p.add_argument(
        "--max-nodes", type=int, default=1, help="the most timing nodes (pilots) held at once"
    )
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- the step's command")

    p = add(
        "launched-server",
        _cmd_launched_server,
        "inside a Slurm job: pick a port, write the address file, exec the server command",
    )
    p.add_argument("--addr-file", required=True)
    p.add_argument("--command", required=True, help="llm.servers[].launch.command")
    p.add_argument("--model", required=True)
    p.add_argument("--instance", required=True)

    p = add("check-config", _cmd_check_config, "validate a config file")
    p.add_argument("--config", required=True)
    p.add_argument("--servers", action="store_true", help="also probe the LLM servers")

    def step(name: str, func: Callable[[argparse.Namespace], int], help_: str):
        p = add(name, func, help_)
        p.add_argument("--config", required=True, help="effective campaign config (YAML/JSON)")
        p.add_argument("--kernel", required=True)
        return p

    p = step("baseline", _cmd_baseline, "step: iteration 0, the baseline as attempt 0")
    p.add_argument("--baseline", required=True, help="the kernel's baseline source (its folder)")
    p.add_argument("--source", required=True, help="attempt 0's source (the copy)")
    p.add_argument("--out", required=True, help="attempt 0's generation.json")
    p = step("plan", _cmd_plan, "step: the PM plans the strategies of one iteration")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--best", required=True, help="best.json of the previous iteration")
    p.add_argument("--archive", help="archive.json of the previous iteration (archive search)")
    p.add_argument("--out", required=True)
    p = step("generate", _cmd_generate, "step: one PG writes one attempt (or repairs)")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--pg", type=int, required=True)
    p.add_argument("--attempt", type=int, required=True)
    p.add_argument("--plan", required=True, help="plan.json (it names the best it starts from)")
    p.add_argument("--failed-evaluation", help="a repair: the failed attempt's evaluation.json")
    p.add_argument("--failed-generation", help="a repair: the failed attempt's generation.json")
    p.add_argument("--failed-source", help="a repair: the failed attempt's source")
    p.add_argument("--source", required=True, help="the attempt's source (written)")
    p.add_argument("--out", required=True, help="the attempt's generation.json (written)")
    p = step("evaluate-attempt", _cmd_evaluate_attempt, "step: evaluate one attempt")
    p.add_argument("--source", required=True, help="the attempt's source")
    p.add_argument("--generation", required=True, help="the attempt's generation.json")
    p.add_argument("--out", required=True, help="the attempt's evaluation.json (written)")
    p = step("final-round", _cmd_final_round, "step: re-time finalists and incumbent together")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument(
        "--evaluations", nargs="+", required=True, help="the evaluation ending each PG's chain"
    )
    p.add_argument("--previous", required=True, help="best.json of the previous iteration")
    p.add_argument("--out", required=True)
    p = step("select", _cmd_select, "step: select the best kernel of an iteration")
    p.add_argument("--iteration", type=int, required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--finals", nargs="+", help="iteration 0: the baseline's evaluation")
    which.add_argument(
        "--final-round", help="final_round.json of the iteration (it lists every PG's chain end)"
    )
    p.add_argument("--previous", help="best.json of the previous iteration")
    p.add_argument("--previous-archive", help="archive.json of the previous iteration")
    p.add_argument("--out", required=True, help="the iteration's best.json (written)")
    p.add_argument("--best-source", required=True, help="the selected source (written)")
    p.add_argument("--archive", required=True, help="the iteration's archive.json (written)")
    p = step("summary", _cmd_summary, "step: summary.json and report of a kernel")
    p.add_argument("--kernel-dir", required=True, help="results/<kernel> (its artifacts)")
    p.add_argument("--bests", nargs="+", required=True, help="every iteration's best.json")
    p.add_argument("--out", required=True)
    p.add_argument("--report", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [SCRIPTED]:
        # the stand-in's own command: the one place product code imports it
        from hpcagents.scripted import main as scripted_main

        return scripted_main(argv[1:], prog=f"hpcagents {SCRIPTED}")
    args = build_parser().parse_args(argv)
    from hpcagents.campaign.select import SelectionError
    from hpcagents.cluster.campaigns import RunnerError
    from hpcagents.llm.interface import LLMUnavailable
    from hpcagents.spec.kernelspec import KernelError

    if args.command in ("evaluate-attempt", "final-round"):
        from hpcagents.core.lifeline import tie_to_campaign

        tie_to_campaign()  # dies, with its sandboxes, when the campaign's Snakemake dies
    try:
        return int(args.func(args) or 0)
    except (ConfigError, LLMUnavailable, SelectionError, RunnerError, KernelError) as exc:
        print(f"hpcagents: error: {exc}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:  # a YAML file read without its own message: file:line
        from hpcagents.spec.config import yaml_error_message

        name = getattr(getattr(exc, "problem_mark", None), "name", "a YAML file")
        print(f"hpcagents: error: {yaml_error_message(name, exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
