"""Promises the README and docs/results.md make to a reader hold."""
import argparse
import json
import os.path as osp
import re
import runpy
import sys
from unittest import mock

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from helpers import ROOT


def read(path: str) -> str:
    with open(osp.join(ROOT, path)) as f:
        return f.read()


def test_train_commands_run_in_the_project_environment():
    """`make demo` installs into .venv; the README's train/test commands say
    to activate it before the first `python tools/...`."""
    section = read('README.md').split('## Train and test', 1)[1]
    assert 'source .venv/bin/activate' in section.split(
        'python tools/train.py', 1)[0]
    for script in ('tools/dist_train.sh', 'tools/dist_test.sh'):
        assert '.venv/bin/python' in read(script), script


def test_declared_torch_range_is_stated_and_installed():
    torch_req = Requirement(re.search(r"'(torch[<>=!,.\d]+)'",
                                      read('setup.py')).group(1))
    bounds = {s.operator: s.version for s in torch_req.specifier}
    assert bounds == {'>=': '2.4', '<': '2.14'}
    readme = read('README.md')
    assert 'torch ≥ 2.4 and < 2.14' in readme
    assert Version(torch.__version__.split('+')[0]) in torch_req.specifier


def _expand(path: str) -> list:
    """``a_{x,y}_b`` -> ``a_x_b``, ``a_y_b`` (the README's shorthand)."""
    match = re.search(r'\{([^{}]*)\}', path)
    if not match:
        return [path]
    return [p for option in match.group(1).split(',') for p in _expand(
        path[:match.start()] + option + path[match.end():])]


class _Parsed(Exception):
    """Raised in place of parsing: carries the tool's parser."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


def _options(parser: argparse.ArgumentParser) -> dict:
    """``{None: the parser's options, 'sub': each subcommand's own plus the
    parser's}`` (whole option strings, e.g. ``{'--out', '-h', ...}``)."""
    own = {o for a in parser._actions for o in a.option_strings}
    options = {None: own}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                options[name] = own | _options(sub)[None]
    return options


def tool_options(script: str) -> dict:
    """The whole options a tool's argparse parser defines, as
    :func:`_options` gives them: the script is run as ``__main__`` with
    parsing replaced by raising its parser. A shell script's are those of
    the ``tools/*.py`` it runs with the command's arguments."""
    if script.endswith('.sh'):
        runs = re.findall(r'\$\(dirname "?\$0"?\)/([\w/]+\.py)', read(script))
        assert len(set(runs)) == 1, f'{script}: runs {runs}, not one tool'
        return tool_options(osp.join(osp.dirname(script), runs[0]))

    def capture(parser, args=None, namespace=None):
        raise _Parsed(parser)

    with mock.patch.object(argparse.ArgumentParser, 'parse_known_args',
                           capture), \
            mock.patch.object(sys, 'argv', [script]):
        try:
            runpy.run_path(osp.join(ROOT, script), run_name='__main__')
        except _Parsed as parsed:
            return _options(parsed.parser)
    raise AssertionError(f'{script} parsed no arguments')


def unknown_flags(script: str, rest: str, options: dict) -> list:
    """The ``--flags`` of a command line ``python <script> <rest>`` that
    are not whole options of the script (of its subcommand, if the first
    word names one); shell comments are not part of the command."""
    rest = re.sub(r'(^|\s)#.*', '', rest)
    words = rest.split()
    known = options.get(words[0] if words else None, options[None])
    flags = re.findall(r'(?<![\w-])(--[a-z][\w-]*)', rest)
    return [f for f in flags if f not in known]


def test_a_flag_is_matched_as_a_whole_option():
    """``--out`` is not ``--out-dir``'s prefix: infer.py has only the
    latter; adapter.py's ``--out`` is its export's, not its inspect's."""
    infer = tool_options('tools/infer.py')
    assert '--out-dir' in infer[None]
    assert unknown_flags('tools/infer.py', 'CFG IMG --out-dir d', infer) == []
    assert unknown_flags('tools/infer.py', 'CFG IMG --out d', infer) == [
        '--out']
    adapter = tool_options('tools/adapter.py')
    assert unknown_flags('tools/adapter.py', 'export C P --out f', adapter) \
        == []
    assert unknown_flags('tools/adapter.py', 'inspect F --out f', adapter) \
        == ['--out']
    assert unknown_flags('tools/train.py', 'C  # --not-a-flag', {None: set()}
                         ) == []
    # a shell script's flags are those of the tool it runs
    assert tool_options('tools/dist_test.sh') == tool_options('tools/test.py')


def test_every_readme_command_names_real_scripts_configs_and_flags():
    """Every `python tools/...` / `bash tools/...` command of the README
    and the docs (continued lines joined): its script exists, the configs
    it names exist, and each --flag is a whole option the script's parser
    (its subcommand's, or for a shell script the tool it runs) defines."""
    import glob
    text = '\n'.join(read(p) for p in ['README.md'] + sorted(
        osp.relpath(d, ROOT) for d in glob.glob(osp.join(ROOT, 'docs/*.md'))))
    text = re.sub(r'\\\n\s*', ' ', text)
    commands = re.findall(r'(?:python|bash|sh) (tools/[\w/.-]+)([^\n`|]*)',
                          text)
    assert len(commands) > 20
    options = {}
    for script, rest in commands:
        assert osp.isfile(osp.join(ROOT, script)), script
        if script not in options:
            options[script] = tool_options(script)
        unknown = unknown_flags(script, rest, options[script])
        assert not unknown, f'{script}{rest}: {unknown} are not its options'
    for config in set(re.findall(r'configs/[\w/.{},*-]+\.py', text)):
        for path in _expand(config):
            assert glob.glob(osp.join(ROOT, path)), path


# The comparisons docs/results.md and the README report, the digits each prints its metric with.
REPORTED_COMPARISONS = {'eurosat5-1k': 2, 'neu-det': 3, 'camvid': 2}


def signed(x: float, digits: int) -> str:
    return f'{x:+.{digits}f}'.replace('-', '−')


@pytest.mark.parametrize('experiment', sorted(REPORTED_COMPARISONS))
def test_reported_numbers_are_those_of_the_committed_report(experiment):
    """Every final-table row in docs/results.md and the README's row quote the report's numbers."""
    digits = REPORTED_COMPARISONS[experiment]
    report = json.loads(read(f'docs/results/{experiment}/results.json'))
    metric = report['metrics'][0]
    results, readme = read('docs/results.md'), read('README.md')
    for mode in report['modes']:
        summary = report['summary'][mode]
        spread = f"{summary['mean'][metric]:.{digits}f} ± {summary['std'][metric]:.{digits}f}"
        seeds = ', '.join(f'{v:.{digits}f}' for v in summary['values'][metric])
        row = f'| {spread} | {seeds} |'
        versus = report['versus_mslora'].get(mode)
        if versus:
            row += (f" {signed(versus['mean'], digits)} [{signed(versus['low'], digits)}, "
                    f"{signed(versus['high'], digits)}] | {versus['word']} |")
        assert row in results, f'docs/results.md: no row {row!r} for {mode} of {experiment}'
        assert spread in readme, f'README.md: {mode} of {experiment} is not quoted as {spread}'


#: the README's name of each mode of a comparison report
MODE_NAMES = {'frozen': 'frozen', 'lora': 'LoRA', 'mona': 'Mona', 'full': 'full'}


@pytest.mark.parametrize('experiment', sorted(REPORTED_COMPARISONS))
def test_readme_quotes_the_signed_differences_of_the_report(experiment):
    """The README's row of each comparison quotes every mode's difference
    as the report prints it, mode − MSLoRA, with its interval."""
    digits = REPORTED_COMPARISONS[experiment]
    report = json.loads(read(f'docs/results/{experiment}/results.json'))
    readme = read('README.md')
    assert 'Differences are **mode − MSLoRA**' in readme
    for mode, versus in report['versus_mslora'].items():
        quoted = (f"{MODE_NAMES[mode]} {signed(versus['mean'], digits)} "
                  f"[{signed(versus['low'], digits)}, "
                  f"{signed(versus['high'], digits)}]")
        assert quoted in readme, f'README.md: {experiment} lacks {quoted!r}'


def test_every_quoted_interval_has_the_reports_sign():
    """Every signed difference with an interval, ``d [low, high]`` or
    ``d ..., interval [low, high]``, in the README and docs/results.md is a
    committed report's mode − MSLoRA (at the digits quoted): none with
    MSLoRA − mode's sign."""
    number = r'([+−-]?\d+\.\d+)'
    reported = set()
    for experiment in REPORTED_COMPARISONS:
        report = json.loads(read(f'docs/results/{experiment}/results.json'))
        for versus in report['versus_mslora'].values():
            for digits in (1, 2, 3):
                reported.add(tuple(signed(versus[k], digits).replace('+', '')
                                   for k in ('low', 'high')))
    found = 0
    for path in ('README.md', 'docs/results.md'):
        text = read(path).replace('\n', ' ')
        for low, high in re.findall(rf'\[{number}, {number}\]', text):
            pair = (low.replace('+', '').replace('-', '−'),
                    high.replace('+', '').replace('-', '−'))
            assert pair in reported, f'{path}: interval [{low}, {high}]'
            found += 1
    assert found >= 2 * 12


def test_readme_opens_with_and_supports_the_three_toolboxes():
    """Title paragraph and "Supported versions" name mmdetection,
    mmsegmentation and mmpretrain, each with the version the constraints
    file pins; the quick start has the existing-environment path: an
    install with an extra, then a train and a test command."""
    readme = read('README.md')
    opening = readme.split('\n\n', 2)[1]
    for name in ('mmdetection', 'mmsegmentation', 'mmpretrain'):
        assert name in opening, name
    pins = dict(re.findall(r'^([\w-]+)==([\w.]+)', read(
        'requirements/constraints.txt'), re.M))
    supported = readme.split('**Supported versions**', 1)[1].split('\n\n')[0]
    for name, dist in (('mmdet', 'mmdet'), ('mmsegmentation', 'mmsegmentation'),
                       ('mmpretrain', 'mmpretrain'), ('mmengine', 'mmengine'),
                       ('mmcv', 'mmcv'), ('peft', 'peft')):
        assert re.search(rf'{name} [^()]*\(tested: {re.escape(pins[dist])}\)',
                         supported), name
    quick = readme.split('## Quick start (existing OpenMMLab environment)',
                         1)[1].split('\n## ', 1)[0]
    block = quick.split('```bash\n', 1)[1].split('```', 1)[0].split('\n')
    assert re.match(r'pip install -e "\.\[(seg|cls|all)\]"', block[0])
    assert block[1].startswith('python tools/train.py configs/')
    assert block[2].startswith('python tools/test.py configs/')
    assert 'pip install "mslora-mm[seg]"' in quick.replace('\n', ' ')
