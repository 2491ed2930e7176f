"""One metric of several compare_tuning.py runs against a swept quantity
(e.g. training images per class), a line per mode::

    python tools/analysis/plot_sweep.py DIR_A/results.json DIR_B/results.json \
        --x 20 100 --xlabel "images per class" --metric accuracy/top1 \
        --out sweep.png
"""
import argparse
import json

from mslora_mm.analysis.comparison.report import plot_sweep, sweep_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('results', nargs='+', help='results.json files')
    parser.add_argument('--x', nargs='+', type=float, required=True,
                        help='the swept value of each results file')
    parser.add_argument('--xlabel', default='images per class')
    parser.add_argument('--metric', required=True)
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    if len(args.x) != len(args.results):
        parser.error('give one --x value per results file')
    results = []
    for path in args.results:
        with open(path) as f:
            results.append(json.load(f))
    points = sweep_points(results, args.x, args.metric)
    plot_sweep(points, args.metric, args.xlabel, args.out)
    for mode, pts in points.items():
        print(mode, ' '.join(f'{x:g}: {m:.4f}±{s:.4f}' for x, m, s in pts))
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
