"""The `kdsearch` command line. User mistakes print one line and exit with status 2, never a traceback."""
import argparse
import sys
import time
from pathlib import Path

from .errors import UserError


def _study(args):
    from .config import load_study
    overrides = {"data.path": args.data, "data.source": "auto"} if getattr(args, "data", None) else {}
    if getattr(args, "confirm_seeds", None) is not None:
        overrides["confirm.seeds"] = args.confirm_seeds  # validated with the study file's rules
    return load_study(args.study, overrides)


def cmd_validate(args):
    study = _study(args)
    print(f"{args.study}: valid study '{study.name}'")


def cmd_baselines(args):
    from .baselines import open_study, run_baselines
    from .engine import pick_device
    from .report import format_table, write_baselines
    study = _study(args)
    start = time.perf_counter()
    device = pick_device(study.device)
    data, store = open_study(study.data, study.seed, study.threads, device, args.results)
    rows, _ = run_baselines(study.teacher, study.baselines, study.space, study.seed, data, store)
    json_path, md_path = write_baselines(rows, Path(args.results) / study.name)
    print(format_table(rows))
    print(f"\nwrote {md_path} and {json_path} in {time.perf_counter() - start:.0f} s")


def cmd_search(args):
    study = _study(args)
    import re
    from .config import NAME_PATTERN
    if args.name is not None and not re.fullmatch(NAME_PATTERN, args.name):
        raise UserError(f"--name {args.name!r} must be a plain folder name (letters, digits, '_', '.', '-'); "
                        f"fix: give another --name")
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1 (got {args.num_samples}); fix: give a positive number")
    from .report import print_summary
    from .search import run_search
    try:
        report, written = run_search(study, args.study, args.results, name=args.name,
                                     num_samples=args.num_samples, address=args.address, resume=args.resume)
    except KeyboardInterrupt:
        again = " ".join(sys.argv[1:]) + ("" if args.resume else " --resume")
        print(f"kdsearch: interrupted; nothing finished is lost. To go on: kdsearch {again}", file=sys.stderr)
        raise SystemExit(130) from None
    print_summary(report, written)


def cmd_report(args):
    import json
    from .report import print_summary, render
    folder = Path(args.folder)
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {folder / 'report.json'} ({type(e).__name__}); fix: give the folder of a "
                        f"finished search, <results>/<name>") from None
    print_summary(report, render(report, folder))


def cmd_bench(args):
    if args.batches < 1:
        raise UserError(f"--batches must be >= 1 (got {args.batches}); fix: give a positive number")
    from .bench import format_bench, run_bench, write_json
    result = run_bench(args.data, batches=args.batches, threads=args.threads,
                       log=lambda m: print(m, file=sys.stderr))
    print(format_bench(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")


def build_parser():
    p = argparse.ArgumentParser(prog="kdsearch", description="Find the best knowledge-distillation settings.")
    sub = p.add_subparsers(dest="command", required=True)

    def study_cmd(name, fn, help, results=True):
        s = sub.add_parser(name, help=help)
        s.add_argument("study", help="study YAML file, e.g. search_spaces/cifar10_quick.yaml")
        s.add_argument("--data", help="dataset: a CIFAR-10 download folder, or an image-folder .tar.gz / folder "
                                      "(overrides data.path)")
        if results:
            s.add_argument("--results", default="runs", help="results and cache folder (default: runs)")
        s.set_defaults(fn=fn)

    study_cmd("validate", cmd_validate, "check a study file without running anything", results=False)
    study_cmd("baselines", cmd_baselines, "train (or reuse) the teacher and the fixed student baselines")
    study_cmd("search", cmd_search, "run the study: baselines, then the KD hyperparameter search, then the report")
    s = sub.choices["search"]
    s.add_argument("--name", help="name of this search's folder and MLflow parent run (default: the study name)")
    s.add_argument("--num-samples", type=int, help="number of trials (overrides search.num_samples)")
    s.add_argument("--confirm-seeds", type=int, help="seeds per confirmed model, 1 to skip the confirmation "
                                                     "(overrides confirm.seeds)")
    s.add_argument("--resume", action="store_true", help="go on with the interrupted search of this name "
                                                         "(same study file and options)")
    s.add_argument("--address", help="join this Ray cluster (e.g. 10.0.0.5:6379) instead of starting a local one")
    r = sub.add_parser("report", help="re-render a search's report from what is stored, training nothing")
    r.add_argument("folder", help="<results>/<name> of a finished search")
    r.set_defaults(fn=cmd_report)
    b = sub.add_parser("bench", help="the notebook's KD loop against kdsearch's KD and CE steps")
    b.add_argument("--data", default="data", help="dataset, as for the study commands (default: data)")
    b.add_argument("--batches", type=int, default=20, help="batches of 256 per measurement (default: 20)")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: one per core)")
    b.add_argument("--json", help="also write the figures to this JSON file")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except UserError as e:
        print(f"kdsearch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdsearch: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
