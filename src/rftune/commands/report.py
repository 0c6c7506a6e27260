"""``rftune report RUN [RUN ...] [-o report.html] [--steps N ...]``: one self-contained HTML page of one or more
runs (curves overlaid, evaluation with intervals, best and worst completions, config and lineage; see
`rftune.evaluation.report`)."""

HELP = "Write one self-contained HTML report (curves, eval with intervals, completions, config) of one or more runs."


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (train.output_dir), e.g. runs/arithmetic")
    parser.add_argument("-o", "--output", help="the page to write (default <first RUN>/report.html)")
    parser.add_argument("--steps", type=int, nargs="+", metavar="N",
                        help="steps whose best and worst completions are shown (default first, middle, last)")


def run(args) -> int:
    from pathlib import Path

    from rftune.evaluation.report import write_report_page

    output = args.output or Path(args.runs[0]) / "report.html"
    path = write_report_page(args.runs, output, args.steps)
    print(f"report written to {path}")
    return 0
