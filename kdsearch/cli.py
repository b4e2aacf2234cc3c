"""The `kdsearch` command line. User mistakes print one line and exit with status 2, never a traceback."""
import argparse
import sys
import time
from pathlib import Path

from kdsearch.core.errors import UserError
from kdsearch.core.names import BASELINES


def _study(args):
    from kdsearch.study.schema import load_study
    overrides = {"data.path": args.data, "data.source": "auto"} if getattr(args, "data", None) else {}
    if getattr(args, "confirm_seeds", None) is not None:
        overrides["confirm.seeds"] = args.confirm_seeds  # validated with the study file's rules
    if getattr(args, "num_samples", None) is not None and args.num_samples >= 1:
        overrides["search.num_samples"] = args.num_samples
    if getattr(args, "no_control", False):
        overrides["search.control"] = False
    return load_study(args.study, overrides)


def cmd_validate(args):
    from kdsearch.phase.context import resolve_networks
    study = _study(args)
    resolve_networks(study, args.study)  # they are built and run with the data, by the other commands
    print(f"{args.study}: valid study '{study.name}'")


def cmd_baselines(args):
    from kdsearch.engine.loop import pick_device
    from kdsearch.phase.baselines import student_phases
    from kdsearch.phase.context import open_study
    from kdsearch.phase.sanity import findings
    from kdsearch.report.tables import format_table, write_baselines
    from kdsearch.study.inputs import student_subfolder
    study = _study(args)
    start = time.perf_counter()
    ctx = open_study(study, args.study, args.results, pick_device(study.device))
    several, written = len(ctx.students) > 1, []
    for sctx, phase in student_phases(ctx):  # the teacher and its tables made once, each student's baselines
        spec = sctx.networks.student.spec
        for f in findings(study, phase, len(ctx.data.train), len(ctx.data.val), len(ctx.data.classes)):
            ctx.log(f"check: {spec + ': ' if several else ''}{f.line}")  # said, not stopped (the search stops)
        rows = [{**r.to_json(), "cached": r.cached} for r in phase.rows]
        folder = Path(args.results) / study.name / (student_subfolder(spec) if several else "")
        written += reversed(write_baselines(rows, folder, sctx.notebook))  # the .md first
        print(f"student {spec}:\n" if several else "", end="")
        print(format_table(rows, notebook=sctx.notebook) + ("\n" if several else ""))
    print(f"\nwrote {' and '.join(map(str, written))} in {time.perf_counter() - start:.0f} s")


def cmd_precision(args):
    from kdsearch.engine.loop import pick_device
    from kdsearch.phase.context import open_study
    from kdsearch.tools.precision import format_precision, measure, write_json
    if args.images < 1:
        raise UserError(f"--images must be >= 1 (got {args.images}); fix: give a positive number")
    study = _study(args)
    ctx = open_study(study, args.study, args.results, pick_device(study.device))
    out = measure(ctx, args.images)
    path = Path(args.results) / study.name / "precision.json"
    write_json(out, path)
    print(format_precision(out) + f"\n\nwrote {path}")


def cmd_train(args):
    import json
    import re

    import torch
    import yaml

    from kdsearch.engine.loop import pick_device
    from kdsearch.phase.context import open_study
    from kdsearch.phase.train import recipe_of, train_recipe
    from kdsearch.report.tables import format_trained, trained_json
    from kdsearch.study.inputs import student_label
    from kdsearch.tools.evidence import evidence
    study = _study(args)
    overrides = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UserError(f"--set {item!r}: not KEY=VALUE; fix: give a recipe field and its value, e.g. "
                            f"--set temperature=8")
        overrides[key.strip()] = yaml.safe_load(value)  # as in a study file: 8 is a number, dkd a string
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [study.seed]
    except ValueError:
        seeds = [-1]
    if min(seeds) < 0:
        raise UserError(f"--seeds {args.seeds!r}: not a comma-separated list of seeds (integers >= 0); fix: e.g. "
                        f"--seeds 0,1,2")
    label, recipe = recipe_of(study, args.recipe, overrides)
    device = pick_device(study.device)
    ctx = open_study(study, args.study, args.results, device)
    specs = [c.networks.student.spec for c in ctx.students]
    if args.student is not None and args.student not in specs:
        raise UserError(f"--student {args.student!r}: the study has no such student; fix: name one of "
                        f"{', '.join(specs)}")
    chosen = ctx.for_student(specs.index(args.student)) if args.student else ctx
    trained = train_recipe(chosen, label, recipe, seeds)
    out = trained_json(trained, evidence(device, torch.get_num_threads()))
    folder = Path(args.results) / study.name / "train" / (
        student_label(chosen.networks.student.spec) if len(specs) > 1 else "")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (re.sub(r"[^A-Za-z0-9_.=+-]", "_", label) + ".json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(format_trained(out))
    print(f"\nwrote {path}")


def cmd_schema(args):
    import json

    from kdsearch.study.schema import json_schema
    print(json.dumps(json_schema(), indent=2))


def cmd_search(args):
    study = _study(args)
    import re

    from kdsearch.study.schema import NAME_PATTERN
    if args.name is not None and not re.fullmatch(NAME_PATTERN, args.name):
        raise UserError(f"--name {args.name!r} must be a plain folder name (letters, digits, '_', '.', '-'); "
                        f"fix: give another --name")
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1 (got {args.num_samples}); fix: give a positive number")
    from kdsearch.report.tables import print_summary
    from kdsearch.search.pipeline import Options, run_search
    try:
        report, written = run_search(study, args.study, Options(args.results, args.name,
                                                                 args.address, args.resume))
    except KeyboardInterrupt:
        again = " ".join(sys.argv[1:]) + ("" if args.resume else " --resume")
        print(f"kdsearch: interrupted; nothing finished is lost. To go on: kdsearch {again}", file=sys.stderr)
        raise SystemExit(130) from None
    print_summary(report, written)


def cmd_report(args):
    from kdsearch.report.build import render
    from kdsearch.report.stored import read
    from kdsearch.report.tables import print_summary
    folder = Path(args.folder)
    try:
        report = read(folder)
    except (OSError, ValueError, KeyError, TypeError) as e:  # none, not JSON, not a report
        raise UserError(f"cannot read {folder / 'report.json'} ({type(e).__name__}); fix: give the folder of a "
                        f"finished search, <results>/<name>") from None
    print_summary(report, render(report, folder))


def cmd_export(args):
    from kdsearch.tools.export import export
    out = export(args.folder, args.format, args.out, args.student)
    print(f"wrote {out} and {out}.json")


def cmd_bench(args):
    if args.batches < 1:
        raise UserError(f"--batches must be >= 1 (got {args.batches}); fix: give a positive number")
    from kdsearch.tools.bench import format_bench, run_bench, write_json
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
        return s

    study_cmd("validate", cmd_validate, "check a study file without running anything", results=False)
    study_cmd("baselines", cmd_baselines, "train (or reuse) the teacher and the fixed student baselines")
    study_cmd("search", cmd_search, "run the study: baselines, then the KD hyperparameter search and its CE control "
                                         "arm, then the report")
    s = sub.choices["search"]
    s.add_argument("--name", help="name of this search's folder and MLflow parent run (default: the study name)")
    s.add_argument("--num-samples", type=int, help="number of trials per arm (overrides search.num_samples)")
    s.add_argument("--no-control", action="store_true", help="no CE control arm: compare kd_best with the fixed "
                                                             "baselines only (sets search.control: false)")
    s.add_argument("--confirm-seeds", type=int, help="seeds per confirmed model, 1 to skip the confirmation "
                                                     "(overrides confirm.seeds)")
    s.add_argument("--resume", action="store_true", help="go on with the interrupted search of this name "
                                                         "(same study file and options)")
    s.add_argument("--address", help="join this Ray cluster (e.g. 10.0.0.5:6379) instead of starting a local one")
    t = study_cmd("train", cmd_train, "train one recipe of the study on some seeds, in this process (no Ray, "
                                      "Optuna or MLflow), reusing its stored teacher, logit table and runs")
    t.add_argument("--recipe", default="kd_reference", choices=BASELINES,
                   help="the study's recipe to train (default: kd_reference)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set loss=dkd --set beta=2 (repeatable)")
    t.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2 (default: the study's seed)")
    t.add_argument("--student", help="a study of several students: the spec of the one to train (default: the first)")
    pr = study_cmd("precision", cmd_precision, "measure the float16 logit table's error in each distillation loss "
                                               "and its gradients, on the study's teacher and kd_reference student")
    pr.add_argument("--images", type=int, default=2048, help="training images measured (default: 2048)")
    sc = sub.add_parser("schema", help="print the study file's JSON Schema (for an editor's YAML language server)")
    sc.set_defaults(fn=cmd_schema)
    r = sub.add_parser("report", help="re-render a search's report from what is stored, training nothing")
    r.add_argument("folder", help="<results>/<name> of a finished search")
    r.set_defaults(fn=cmd_report)
    e = sub.add_parser("export", help="write a search's best student as a file that loads without kdsearch")
    e.add_argument("folder", help="<results>/<name> of a finished search")
    e.add_argument("--format", default="pt2", choices=("pt2", "onnx", "state_dict"),
                   help="pt2: torch.export (default); onnx (needs onnx, onnxscript); state_dict: the weights")
    e.add_argument("--out", help="the file to write (default: <folder>/student.pt2, .onnx or .pt)")
    e.add_argument("--student", help="a study of several students: the spec of the one to export (default: the "
                                     "recommended one)")
    e.set_defaults(fn=cmd_export)
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
