"""Which code made a run: a fingerprint of the package's source (its Python
files and native sources), the git commit of a checkout, and the versions of
the libraries a comparison depends on. Runs made before their files recorded
it get it from git history (the commit that added the run's file)."""
import glob
import hashlib
import json
import os
import os.path as osp
import subprocess
from typing import Dict, Iterable, List, Optional, Tuple

#: the package's folder and the repository holding it (a checkout or not)
PACKAGE = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
REPO = osp.dirname(PACKAGE)
#: the distributions whose versions a run records
LIBRARIES = ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmsegmentation',
             'mmpretrain', 'peft')
#: what a run file says when its versions could not be recorded
UNKNOWN = 'not recorded'


def is_source(path: str) -> bool:
    """Whether ``path`` (relative to the repository, ``/``-separated) is
    part of the fingerprint: a ``.py`` file under ``mslora_mm/`` or a file
    under a ``csrc`` folder of it; hidden folders and caches are not."""
    parts = path.split('/')
    if parts[0] != 'mslora_mm' or any(
            p.startswith('.') or p == '__pycache__' for p in parts[1:-1]):
        return False
    return path.endswith('.py') or 'csrc' in parts[1:-1]


def fingerprint(files: Iterable[Tuple[str, bytes]]) -> str:
    """The sha256 of ``(relative path, content)`` pairs, sorted by path: the
    same source gives the same fingerprint wherever it lies."""
    digest = hashlib.sha256()
    for path, content in sorted(files):
        digest.update(path.encode() + b'\0')
        digest.update(hashlib.sha256(content).hexdigest().encode() + b'\n')
    return digest.hexdigest()


def source_fingerprint(package: str = PACKAGE) -> str:
    """The fingerprint of the package's source on disk."""
    root = osp.dirname(package)
    files = []
    for path in glob.glob(osp.join(package, '**', '*'), recursive=True):
        rel = osp.relpath(path, root).replace(os.sep, '/')
        if osp.isfile(path) and is_source(rel):
            with open(path, 'rb') as f:
                files.append((rel, f.read()))
    return fingerprint(files)


def _git(repo: str, *args: str, data: Optional[bytes] = None
         ) -> Optional[bytes]:
    """``git -C repo args`` output, or None where git or the checkout is
    missing or the command fails."""
    try:
        proc = subprocess.Popen(['git', '-C', repo, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None
    out, _ = proc.communicate(data)
    return out if proc.returncode == 0 else None


def _versions() -> Dict[str, str]:
    from importlib import metadata
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = 'not installed'
    return versions


def code_version(package: str = PACKAGE) -> dict:
    """What names the running code: ``fingerprint`` of the source,
    ``commit`` of the checkout (None outside git) and whether the package
    differs from it (``dirty``), ``versions`` of ``LIBRARIES``, and
    ``source`` (how it was found)."""
    repo = osp.dirname(package)
    head = _git(repo, 'rev-parse', 'HEAD')
    status = _git(repo, 'status', '--porcelain', '--', osp.basename(package))
    return dict(fingerprint=source_fingerprint(package),
                commit=head.decode().strip() if head else None,
                dirty=bool(status.strip()) if status is not None else None,
                versions=_versions(), source='recorded by the run')


def fingerprint_at(commit: str, repo: str = REPO) -> str:
    """The fingerprint of the package's source at ``commit`` of ``repo``."""
    listing = _git(repo, 'ls-tree', '-r', '--name-only', commit, '--',
                   'mslora_mm')
    if listing is None:
        raise ValueError(f'{repo}: no commit {commit} to read the source of')
    paths = [p for p in listing.decode().splitlines() if is_source(p)]
    blobs = _git(repo, 'cat-file', '--batch',
                 data=''.join(f'{commit}:{p}\n' for p in paths).encode())
    files, offset = [], 0
    for path in paths:
        header_end = blobs.index(b'\n', offset)
        size = int(blobs[offset:header_end].split()[2])
        start = header_end + 1
        files.append((path, blobs[start:start + size]))
        offset = start + size + 1
    return fingerprint(files)


def adding_commit(path: str, repo: str = REPO) -> Optional[str]:
    """The commit that added the file ``path`` (None: not committed)."""
    out = _git(repo, 'log', '--diff-filter=A', '--format=%H', '--',
               osp.relpath(osp.abspath(path), repo))
    lines = out.decode().split() if out else []
    return lines[-1] if lines else None


def stamp_from_history(folder: str, repo: str = REPO) -> List[str]:
    """Give every committed run file under ``folder`` without a ``code``
    the code of the commit that added it (its libraries' versions were not
    recorded); returns the files stamped."""
    stamped = []
    cache: Dict[str, str] = {}
    for path in sorted(glob.glob(osp.join(folder, '**', '*.json'),
                                 recursive=True)):
        try:
            with open(path) as f:
                saved = json.load(f)
        except ValueError:  # not one JSON document (a log of lines)
            continue
        if not isinstance(saved, dict) or 'signature' not in saved \
                or 'code' in saved:
            continue
        commit = adding_commit(path, repo)
        if commit is None:
            continue
        if commit not in cache:
            cache[commit] = fingerprint_at(commit, repo)
        saved['code'] = dict(
            fingerprint=cache[commit], commit=commit, dirty=None,
            versions=UNKNOWN,
            source='from git history: the commit that added this file')
        with open(path, 'w') as f:
            json.dump(saved, f, indent=1)
        stamped.append(path)
    return stamped


def same_code(made: Optional[dict], current: dict) -> bool:
    """Whether a run made by ``made`` (None: unknown) is the ``current``
    code's: the same source fingerprint and, where recorded, versions."""
    if not made:
        return False
    versions = made.get('versions')
    return made.get('fingerprint') == current['fingerprint'] and (
        not isinstance(versions, dict) or versions == current['versions'])
