"""Print pit-det's requirements (pyproject.toml), one per line, for ``pip install -r``: what ``scripts/setup.sh``
installs while mmcv builds.

    python scripts/requirements.py --without torch torchvision mmcv --extras test,eval
    python scripts/requirements.py --check-installed torch torchvision   # exit 1 if outside pit-det's ranges

Standalone (stdlib, or the TOML reader pip carries on Python 3.10), because it runs before pit_det is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / 'pyproject.toml'


def canonical(name: str) -> str:
    """PEP 503 name: what pip compares."""
    return re.sub(r'[-_.]+', '-', name).lower()


def requirement_name(requirement: str) -> str:
    """The PEP 503 name of a requirement string (``"mmcv==2.1.0"`` -> ``mmcv``)."""
    return canonical(re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)', requirement).group(1))


def optional_dependencies(pyproject: Path = PYPROJECT) -> dict[str, list[str]]:
    """pit-det's extras and the requirements of each (``[project.optional-dependencies]``)."""
    return tomllib.loads(pyproject.read_text())['project'].get('optional-dependencies', {})


def requirements(extras: list[str], without: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """The dependencies and those of ``extras``, less the packages named in ``without``."""
    optional = optional_dependencies(pyproject)
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f'error: pit-det has no extra {", ".join(unknown)}; it has {", ".join(sorted(optional))}')
    listed = tomllib.loads(pyproject.read_text())['project']['dependencies'] + [r for e in extras for r in optional[e]]
    skip = {requirement_name(n) for n in without}
    return [r for r in listed if requirement_name(r) not in skip]


def outside_range(names: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """For each of ``names`` installed in this interpreter's environment at a version outside pit-det's requirement
    (its local part, ``+cu130``, ignored), ``NAME VERSION: pit-det supports NAME SPEC``; one place holds the range
    (pyproject.toml), which the setup checks a kept torch against."""
    import importlib.metadata

    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError:
        from pip._vendor.packaging.requirements import Requirement
    wanted = {requirement_name(r): Requirement(r) for r in requirements([], [], pyproject)}
    problems = []
    for name in names:
        requirement = wanted[requirement_name(name)]
        version = importlib.metadata.version(name).split('+')[0]
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f'{name} {version}: pit-det supports {name}{requirement.specifier} (pyproject.toml)')
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--without', nargs='*', default=[], help='package names to leave out')
    parser.add_argument('--extras', default='', help='comma-separated extras (test, eval, export, peers)')
    parser.add_argument(
        '--check-installed',
        nargs='+',
        metavar='NAME',
        help='instead: exit 1, naming each, if these installed packages are outside the ranges',
    )
    args = parser.parse_args(argv)
    if args.check_installed:
        problems = outside_range(args.check_installed)
        print('\n'.join(problems), file=sys.stderr) if problems else None
        return 1 if problems else 0
    extras = [e.strip() for e in args.extras.split(',') if e.strip() and e.strip() != 'none']
    print('\n'.join(requirements(extras, args.without)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
