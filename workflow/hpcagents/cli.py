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

from .artifacts import REPO_DIR
from .config import ConfigError, load_config


def _cfg(args: argparse.Namespace):  # noqa: ANN202 - CampaignConfig
    return load_config(args.config)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .config import check_servers

    cfg = _cfg(args)
    if args.servers:
        check_servers(cfg)
    print(f"config OK: kernels {', '.join(cfg.kernels)}; {len(cfg.llm.servers)} server(s)")
    return 0


def _cmd_baseline(args: argparse.Namespace) -> int:
    from .steps import baseline

    baseline(_cfg(args), args.kernel, Path(args.out_dir))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from .steps import plan

    plan(_cfg(args), args.kernel, args.iteration, Path(args.best), Path(args.out))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .steps import generate

    generate(
        _cfg(args),
        args.kernel,
        args.iteration,
        args.pg,
        args.attempt,
        Path(args.plan),
        Path(args.best),
        Path(args.out_dir),
        Path(args.previous) if args.previous else None,
    )
    return 0


def _cmd_evaluate_attempt(args: argparse.Namespace) -> int:
    from .steps import evaluate_attempt

    rec = evaluate_attempt(_cfg(args), args.kernel, Path(args.attempt_dir))
    print(f"{args.attempt_dir}: {rec['status']} {rec.get('reason', '')}".rstrip())
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from .kernelspec import load_kernel
    from .select import select_iteration

    kernel = load_kernel(args.kernel)
    rec = select_iteration(
        args.kernel,
        args.iteration,
        [Path(p).parent for p in args.candidates],
        Path(args.previous) if args.previous else None,
        Path(args.out_dir),
        kernel.source,
    )
    print(f"{args.kernel} iteration {args.iteration}: {rec['reason']}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from .summary import write_summary

    text = write_summary(
        _cfg(args), args.kernel, Path(args.kernel_dir), Path(args.out), Path(args.report)
    )
    print(text)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import run_evaluate

    return run_evaluate(args)


def _cmd_scripted(args: argparse.Namespace) -> int:
    from .scripted import run

    return run(args)


def _cmd_new_kernel(args: argparse.Namespace) -> int:
    from .newkernel import find_blanks, new_kernel

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
    print(
        f"then check it: hpcagents evaluate --kernel {args.name} --source "
        f"{folder / (args.name + '.c')} (the baseline against your original), and add "
        f"{args.name} to `kernels:` in config/config.yaml"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

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

    from .evaluate import add_evaluate_arguments
    from .scripted import add_arguments as add_scripted_arguments

    add_evaluate_arguments(
        add(
            "evaluate",
            _cmd_evaluate,
            "compile, validate and time one C source against a kernel's reference",
        )
    )
    add_scripted_arguments(
        add(
            "scripted-model",
            _cmd_scripted,
            "serve the scripted model (a stand-in for an LLM, not a model) over HTTP",
        )
    )
    p = add("demo", _cmd_demo, "run the demo campaign on the scripted model (local executor)")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency", type=float, default=0.2, help="scripted model latency (s)")
    p.add_argument("--cores", default="all")
    p.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments (after --)")

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
        help="where kernel folders live (default: this checkout's kernels/, where the "
        "campaign and hpcagents evaluate look)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing folder")

    p = add("check-config", _cmd_check_config, "validate a config file")
    p.add_argument("--config", required=True)
    p.add_argument("--servers", action="store_true", help="also probe the LLM servers")

    def step(name: str, func: Callable[[argparse.Namespace], int], help_: str):
        p = add(name, func, help_)
        p.add_argument("--config", required=True, help="effective campaign config (YAML/JSON)")
        p.add_argument("--kernel", required=True)
        return p

    p = step("baseline", _cmd_baseline, "step: iteration 0, the baseline as attempt 0")
    p.add_argument("--out-dir", required=True)
    p = step("plan", _cmd_plan, "step: the PM plans the strategies of one iteration")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--best", required=True, help="best.json of the previous iteration")
    p.add_argument("--out", required=True)
    p = step("generate", _cmd_generate, "step: one PG writes one attempt (or repairs)")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--pg", type=int, required=True)
    p.add_argument("--attempt", type=int, required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--best", required=True)
    p.add_argument("--previous", help="directory of the failed attempt to repair")
    p.add_argument("--out-dir", required=True)
    p = step("evaluate-attempt", _cmd_evaluate_attempt, "step: evaluate one attempt")
    p.add_argument("--attempt-dir", required=True)
    p = step("select", _cmd_select, "step: select the best kernel of an iteration")
    p.add_argument("--iteration", type=int, required=True)
    p.add_argument("--candidates", nargs="+", required=True, help="final evaluation.json per PG")
    p.add_argument("--previous", help="best.json of the previous iteration")
    p.add_argument("--out-dir", required=True)
    p = step("summary", _cmd_summary, "step: summary.json and report of a kernel")
    p.add_argument("--kernel-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--report", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .kernelspec import KernelError
    from .llm import LLMUnavailable
    from .select import SelectionError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, LLMUnavailable, SelectionError, KernelError) as exc:
        print(f"hpcagents: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
