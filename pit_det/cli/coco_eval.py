"""COCO results side by side: ``pit-det-coco-eval ANN RESULTS.json [RESULTS.json ...]``.

RESULTS are COCO detection results files, e.g. written by ``mim test ... --cfg-options
test_evaluator.outfile_prefix=work_dirs/pit_s`` (``work_dirs/pit_s.bbox.json``). Prints the 12 COCO numbers per file
(with a difference column for two files) and per-class AP; ``--out-dir DIR`` adds PR curves, the COCO error breakdown
(C75, C50, Loc, Sim, Oth, BG, FN; mmdet's coco_error_analysis) and TIDE's error types per file.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from ..evaluation.coco import (
    BREAKDOWN,
    CLASS_METRICS,
    METRICS,
    TIDE_ERRORS,
    EvaluationError,
    error_breakdown,
    evaluate,
    fmt,
    load_ground_truth,
    load_results,
    plot_files,
    plot_pr_curves,
    tide_errors,
    tidecv,
)
from ..outputs import OutputError, check_dir_output, check_file_output, table, write_text
from . import command, parser_from_doc


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_from_doc(__doc__)
    parser.add_argument('ann', help='COCO annotation file the results refer to')
    parser.add_argument('results', nargs='+', help='COCO results JSON files')
    parser.add_argument('--names', nargs='+', help='a name per results file (default: the file names)')
    parser.add_argument(
        '--out',
        help='write every number (all digits) to this file (replaces an earlier report of '
        'this tool; any other existing file only with --force)',
    )
    parser.add_argument(
        '--force',
        action='store_true',
        help='let --out replace an existing file that is not a report of this tool (never an input)',
    )
    parser.add_argument('--out-dir', help='folder for PR curves and error analyses (also prints their numbers)')
    return parser.parse_args(argv)


def _plot_prefix(name: str) -> str:
    """A file-name prefix for a results file's plots: its name without ``.json``, other than letters, digits, ``.``,
    ``_`` and ``-`` replaced."""
    base = name[: -len('.json')] if name.endswith('.json') else name
    return re.sub(r'[^\w.-]', '_', base) or 'results'


def _is_report(path: Path) -> bool:
    """Whether ``path`` is a report this tool wrote (``{"results": {name: {...}}}``)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and set(data) == {'results'} and isinstance(data['results'], dict)


def check_args(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """Names and plot prefixes of the results files; ``--out`` and ``--out-dir`` checked against the inputs.

    Raises:
        EvaluationError, OutputError: before anything is read or computed.
    """
    names = args.names or [Path(r).name for r in args.results]
    if len(names) != len(args.results) or len(set(names)) != len(names):
        raise EvaluationError(f'--names: give one distinct name per results file ({len(args.results)})')
    prefixes = {name: _plot_prefix(name) for name in names}
    if len(set(prefixes.values())) != len(names):
        raise EvaluationError(
            f'--names {" ".join(names)}: their plots would share file names '
            f'({", ".join(prefixes.values())}); give names that differ in letters or digits'
        )
    inputs = [('annotation file', args.ann)] + [('results file', r) for r in args.results]
    if args.out:
        check_file_output(args.out, inputs, option='--out', own=_is_report, force=args.force)
    if args.out_dir:
        tidecv()  # before any work: the plots folder's TIDE analysis needs the eval extra
        check_dir_output(
            args.out_dir, [f for p in prefixes.values() for f in plot_files(p)], inputs, option='--out-dir'
        )
    return names, prefixes


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names, prefixes = check_args(args)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            gt = load_ground_truth(args.ann)
        for w in caught:
            print(f'warning: {w.message}', file=sys.stderr)
        files = {name: load_results(path, gt) for name, path in zip(names, args.results, strict=True)}
    except (EvaluationError, OutputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    report = {}
    for name, results in files.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            report[name] = evaluate(gt, results)
        for w in caught:
            print(f'warning: {name}: {w.message}', file=sys.stderr)
    diff = len(names) == 2
    header = ['metric', *names] + ([f'{names[1]} - {names[0]}'] if diff else [])
    rows = [
        [m, *(fmt(report[n][m]) for n in names)]
        + ([f'{report[names[1]][m] - report[names[0]][m]:+.3f}'] if diff else [])
        for m in METRICS
    ]
    print(table(header, rows))
    classes = list(report[names[0]]['per_class'])
    print('\nper class')
    print(
        table(
            ['class', *(f'{n} {m}' if len(names) > 1 else m for n in names for m in CLASS_METRICS)],
            [[c, *(fmt(report[n]['per_class'][c][m]) for n in names for m in CLASS_METRICS)] for c in classes],
        )
    )
    if args.out_dir:
        plots = Path(args.out_dir)
        plots.mkdir(parents=True, exist_ok=True)
        for name, results in files.items():
            stem = prefixes[name]
            if '_precision' in report[name]:
                plot_pr_curves(report[name]['_precision'], plots / f'{stem}_pr.png', f'{name}: precision-recall')
            report[name]['coco_errors'] = error_breakdown(gt, results, plots, stem)
            report[name]['tide_errors'] = (
                tide_errors(gt, results, plots / f'{stem}_tide', stem) if results else {t: 0.0 for t in TIDE_ERRORS}
            )
        print('\nCOCO error breakdown (AP, all areas)')
        print(table(['name', *BREAKDOWN], [[n, *(fmt(report[n]['coco_errors'][t]) for t in BREAKDOWN)] for n in names]))
        print('\nTIDE errors (dAP at IoU 0.5)')
        print(
            table(
                ['name', *TIDE_ERRORS],
                [[n, *(fmt(report[n]['tide_errors'][t], 2) for t in TIDE_ERRORS)] for n in names],
            )
        )
        print(f'\nplots in {plots}')
    if args.out:
        out = {n: {k: v for k, v in r.items() if not k.startswith('_')} for n, r in report.items()}
        write_text(args.out, json.dumps({'results': out}, indent=2))
        print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
