"""The ``course`` command.

    course run [NOTEBOOK ...] [--profile smoke|standard|full] [-p NAME VALUE ...] [--cell-timeout SECONDS]
    course refresh [NOTEBOOK ...] [--cell-timeout SECONDS]   re-execute committed notebooks in place
    course build-exercises                 write exercises/ from solutions/
    course check                           exercises in sync, no stray notebook state
    course grade SUBMISSION ... [--output grades/]
    course sweep [--profile P] [--methods ...] [--noise ...] [--seeds ...]   the CRM reproduction grid
    course end-to-end [--profile cpu|gpu] [--seeds ...] [--arms ...]   GRPO policies against noisy-label reward models
    course site [--source FOLDER] [--output build/site]   the course website, from executed notebooks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROFILES = ("smoke", "standard", "full")
# course_lib.studies.reproduction.PROFILES, named here so that the command starts without importing torch.
SWEEP_PROFILES = ("smoke", "standard", "full", "lora_cpu", "lora", "independent_cpu", "independent")
# course_lib.studies.end_to_end.PROFILES and ARMS
END_TO_END_PROFILES = ("cpu", "gpu")
END_TO_END_ARMS = ("gold", "clean", "noisy", "self_review", "crm", "ensemble")


def _cmd_run(args) -> int:
    from .execute import parse_parameter, run_course
    from .notebook_io import repo_root, resolve_notebooks

    root = repo_root()
    notebooks = resolve_notebooks(args.notebooks, "notebooks", root)
    extra = {name: parse_parameter(value) for name, value in args.parameter}
    output_dir = Path(args.output or root / "build" / args.profile)

    def announce(path, parameters):
        print(f"running {path.name} with {parameters} ...", flush=True)

    runs = run_course(notebooks, output_dir, args.profile, extra, log_output=args.log_output, on_start=announce,
                      cell_timeout=args.cell_timeout)
    for run in runs:
        print(f"  {run.notebook}: {'ok' if run.ok else 'FAILED'} in {run.seconds:g} s")
    print(f"executed notebooks and report: {output_dir / 'report.md'}")
    failures = [run for run in runs if not run.ok]
    for run in failures:
        print(f"error: {run.error}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_refresh(args) -> int:
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    from .execute import cell_timeout_for, refresh_notebook
    from .notebook_io import repo_root, resolve_notebooks

    cell_timeout = cell_timeout_for("standard", args.cell_timeout)
    failures = 0
    for path in resolve_notebooks(args.notebooks, "notebooks", repo_root()):
        print(f"refreshing {path.name} ...", flush=True)
        try:
            print(f"  done in {refresh_notebook(path, cell_timeout=cell_timeout):.1f} s")
        except (CellExecutionError, CellTimeoutError) as error:
            failures += 1
            hint = " (raise the per-cell limit with --cell-timeout SECONDS, 0: no limit)"
            print(f"error: {path.name} left unchanged{hint if isinstance(error, CellTimeoutError) else ''}: {error}",
                  file=sys.stderr)
    return 1 if failures else 0


def _cmd_build_exercises(args) -> int:
    from .exercises import build_exercises
    from .notebook_io import repo_root

    root = repo_root()
    for path in build_exercises(root):
        print(f"wrote {path.relative_to(root)}")
    return 0


def _cmd_check(args) -> int:
    from .checks import course_problems
    from .notebook_io import repo_root

    problems = course_problems(repo_root())
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print("course check: ok" if not problems else f"course check: {len(problems)} problem(s)")
    return 1 if problems else 0


def _cmd_grade(args) -> int:
    from ..grading.grader import grade_submissions
    from ..grading.report import format_grade_table, write_grade_reports
    from .execute import available_kernel
    from .notebook_io import repo_root

    paths = []
    for item in args.submissions:
        item = Path(item)
        paths.extend(sorted(item.glob("*.ipynb")) if item.is_dir() else [item])
    if not paths:
        print("error: no submitted notebooks found", file=sys.stderr)
        return 2
    solutions = Path(args.solutions) if args.solutions else repo_root() / "solutions"
    grades = grade_submissions(paths, solutions, assignment=args.assignment, kernel_name=available_kernel(),
                               timeout=args.timeout, cell_timeout=args.cell_timeout,
                               on_start=lambda path: print(f"grading {path} ...", flush=True))
    json_path, csv_path = write_grade_reports(grades, args.output)
    print(format_grade_table(grades))
    print(f"scores written to {json_path} and {csv_path}")
    return 0


def _cmd_sweep(args) -> int:
    from .notebook_io import repo_root
    from ..studies.sweep import run_sweep, write_report

    root = repo_root()
    output = Path(args.output or root / "results")
    if args.report_only:
        write_report(output)
        print(f"report: {output / 'crm_reproduction.md'}")
        return 0
    noises = args.noise and [float(n) if n.replace(".", "", 1).isdigit() else n for n in args.noise]
    csv_path = run_sweep(output, profile=args.profile, methods=args.methods, noises=noises, seeds=args.seeds,
                         device=args.device, cache_dir=args.cache or root / "build" / "cache")
    written = [csv_path, *(p for p in (output / "crm_reproduction.md", output / "crm_reproduction.png") if p.exists())]
    print("results: " + ", ".join(map(str, written)))
    return 0


def _cmd_end_to_end(args) -> int:
    from .notebook_io import repo_root
    from ..studies.end_to_end import run_end_to_end
    from ..studies.end_to_end_report import write_report

    root = repo_root()
    output = Path(args.output or root / "results")
    if not args.report_only:
        run_end_to_end(output, profile=args.profile, seeds=args.seeds, arms=args.arms or END_TO_END_ARMS,
                       device=args.device, cache_dir=args.cache or root / "build" / "cache")
    print(f"results: {output / 'end_to_end.csv'}, {write_report(output)}, {output / 'end_to_end.png'}")
    return 0


def _cmd_site(args) -> int:
    from .notebook_io import repo_root
    from .site import build_site

    build = build_site(repo_root(), output=args.output and Path(args.output), source=args.source and Path(args.source),
                       on_page=lambda name: print(f"  wrote {name}", flush=True))
    print(f"course site: {len(build.pages)} pages in {build.seconds:.1f} s -> {build.path / 'index.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course", description="Run, check and grade the reward-modeling course.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute notebooks with papermill and write build/<profile>/report.md")
    run.add_argument("notebooks", nargs="*", help="chapter numbers or names (default: all), e.g. 01 02_reward_models")
    run.add_argument("--profile", choices=PROFILES, default="standard")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter, e.g. -p noise_rate 0.4 -p device cuda")
    run.add_argument("--output", help="output folder (default: build/<profile>)")
    run.add_argument("--log-output", action="store_true", help="stream the notebooks' output to the terminal")
    run.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                     help="seconds any one cell may run before its notebook fails; 0: no limit "
                          "(default per profile: smoke 300, standard 3600, full 21600)")
    run.set_defaults(func=_cmd_run)

    refresh = sub.add_parser("refresh", help="re-execute committed notebooks in place (maintainers)")
    refresh.add_argument("notebooks", nargs="*")
    refresh.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                         help="seconds any one cell may run; 0: no limit (default 3600, the standard profile's)")
    refresh.set_defaults(func=_cmd_refresh)

    build = sub.add_parser("build-exercises", help="generate exercises/ from solutions/")
    build.set_defaults(func=_cmd_build_exercises)

    check = sub.add_parser("check", help="fail if exercises are stale or notebooks carry stray state")
    check.set_defaults(func=_cmd_check)

    grade = sub.add_parser("grade", help="grade submitted exercise notebooks")
    grade.add_argument("submissions", nargs="+", help="notebooks or folders of notebooks")
    grade.add_argument("--output", default="grades", help="where grades.json and grades.csv go (default: grades/)")
    grade.add_argument("--assignment", help="assignment name when the notebooks do not record it, e.g. 01_bradley_terry")
    grade.add_argument("--solutions", help="solutions folder (default: the course's solutions/)")
    grade.add_argument("--timeout", type=float, default=300, help="seconds allowed per notebook (default 300)")
    grade.add_argument("--cell-timeout", type=float, default=60, help="seconds allowed per cell (default 60)")
    grade.set_defaults(func=_cmd_grade)

    site = sub.add_parser("site", help="build the course website (static HTML, offline) from executed notebooks")
    site.add_argument("--source", help="folder of executed lesson notebooks (default: the committed notebooks/, "
                                       "standard profile; e.g. build/smoke after 'course run --profile smoke')")
    site.add_argument("--output", help="where the site goes (default: build/site)")
    site.set_defaults(func=_cmd_site)

    sweep = sub.add_parser("sweep", help="run the CRM reproduction grid (resumable) into results/")
    sweep.add_argument("--profile", choices=SWEEP_PROFILES, default="standard",
                       help="grid size; lora_cpu and lora give each reward model its own LoRA encoder; "
                            "independent_cpu and independent make the two models of a method of two SFT policies "
                            "of different seeds (every weight fine-tuned)")
    sweep.add_argument("--methods", nargs="+", help="methods to run (default: all; independent profiles: single "
                                                    "early_stop ensemble coteaching_plus self_review peer_review "
                                                    "crm_self_review crm)")
    sweep.add_argument("--noise", nargs="+",
                       help="noise models (clean, flip20, flip40, bt, length) or flip rates such as 0.3 "
                            "(default: clean flip20 flip40 bt length; independent profiles: flip40 bt)")
    sweep.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    sweep.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    sweep.add_argument("--output", help="folder for crm_reproduction.csv/.md/.png (default: results/)")
    sweep.add_argument("--cache", help="cache of encoded features and SFT policies (default: build/cache)")
    sweep.add_argument("--report-only", action="store_true", help="only rewrite the report from the CSVs in the output folder")
    sweep.set_defaults(func=_cmd_sweep)

    e2e = sub.add_parser("end-to-end", help="GRPO policies against reward models trained on the policy's own noisy "
                                            "pairs (resumable) into results/end_to_end.csv/.md/.png")
    e2e.add_argument("--profile", choices=END_TO_END_PROFILES, default="cpu",
                     help="cpu: 2 CPU cores, about 1-1.5 h for five seeds; gpu: larger, on one GPU")
    e2e.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    e2e.add_argument("--arms", nargs="+", choices=END_TO_END_ARMS, help="arms to run (default: all six)")
    e2e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    e2e.add_argument("--output", help="folder for end_to_end.csv/.md/.png (default: results/)")
    e2e.add_argument("--cache", help="cache of SFT policies (default: build/cache)")
    e2e.add_argument("--report-only", action="store_true", help="only rewrite the report from the CSV")
    e2e.set_defaults(func=_cmd_end_to_end)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
