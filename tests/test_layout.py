"""The package's layering: models and ops never import a tool, models never deployment, ops nothing of pit_det;
every command-line main lives in pit_det/cli; no module over 400 lines.

``python tests/test_layout.py`` prints which pit_det module imports which.
"""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'pit_det'
# what each layer may import from pit_det (beyond itself); anything else is an arrow pointing up
ALLOWED = {
    'outputs': set(),  # a leaf: how every file is written
    'configs': set(),  # a leaf: where the config files are
    'ops': set(),  # the kernel and its binding: nothing of pit_det
    'checkpoint': {'outputs'},  # reading, fitting and converting weights: never a model
    'models': {'ops', 'checkpoint'},  # models only: never deployment
    'data': {'outputs'},
    'preflight': {'models', 'checkpoint', 'data'},
    'runner': {'preflight', 'models', 'checkpoint', 'outputs', 'extensions'},
    'draw': {'models', 'data', 'outputs'},
    'demo': {'configs', 'data', 'draw'},
    # __init__: registration in a fresh process
    'benchmark': {'configs', 'models', 'ops', 'data', 'deploy', 'outputs', '__init__'},
    '__init__': {'models', 'runner', 'checkpoint', 'deploy', 'extensions'},
    # the one module that changes other libraries (through their extension points): checkpoint loading
    'extensions': {'checkpoint'},
    # demo: the convergence study trains the demos
    'analysis': {'models', 'checkpoint', 'ops', 'data', 'outputs', 'configs', 'demo'},
    'evaluation': {'data', 'outputs'},
    'deploy': {'models', 'checkpoint', 'ops', 'data', 'outputs'},
    'acceptance': {'benchmark', 'configs', 'ops'},  # the GPU acceptance run: the benchmark's timing, the kernel
    'cli': {
        *('acceptance', 'analysis', 'benchmark', 'checkpoint', 'configs', 'data', 'demo', 'deploy', 'draw'),
        *('evaluation', 'models', 'ops', 'outputs', 'preflight', 'runner', '__init__'),
    },
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imports(path: Path) -> set[str]:
    """pit_det modules imported by ``path`` (relative imports resolved)."""
    package = module_name(path).split('.') if path.name == '__init__.py' else module_name(path).split('.')[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = '.'.join(base + ([node.module] if node.module else []))
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {t for t in found if t == 'pit_det' or t.startswith('pit_det.')}


def layer(module: str) -> str:
    parts = module.split('.')
    return '__init__' if len(parts) == 1 else parts[1]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob('*.py'))}


def test_arrows_point_down():
    upward = [
        f'{m} imports {t}'
        for m, targets in graph().items()
        for t in targets
        if layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)]
    ]
    assert upward == []


def test_models_never_import_deployment_and_ops_import_nothing_of_pit_det():
    edges = graph()
    assert not [
        f'{m} imports {t}'
        for m, targets in edges.items()
        if layer(m) == 'models'
        for t in targets
        if layer(t) == 'deploy'
    ]
    assert not [
        f'{m} imports {t}' for m, targets in edges.items() if layer(m) == 'ops' for t in targets if layer(t) != 'ops'
    ]
    assert not [
        f'{m} imports {t}'
        for m, targets in edges.items()
        if layer(m) == 'checkpoint'
        for t in targets
        if layer(t) == 'models'
    ]


def test_no_module_exceeds_400_lines():
    assert not [f'{module_name(p)}: {n}' for p in PACKAGE.rglob('*.py') if (n := len(p.read_text().splitlines())) > 400]


def test_every_main_is_in_cli_and_tools_are_thin():
    mains = [
        module_name(p)
        for p in PACKAGE.rglob('*.py')
        if any(isinstance(n, ast.FunctionDef) and n.name.endswith('main') for n in ast.parse(p.read_text()).body)
    ]
    assert mains and all(m.startswith('pit_det.cli.') for m in mains), mains
    for tool in (ROOT / 'tools').glob('*.py'):
        tree = ast.parse(tool.read_text())
        assert all(t.startswith('pit_det.cli') for t in imports(tool)), tool.name
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body), tool.name


def test_console_commands_point_at_cli_mains():
    import tomllib

    scripts = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']
    assert scripts and all(target.startswith('pit_det.cli.') for target in scripts.values()), scripts


if __name__ == '__main__':
    for module, targets in graph().items():
        print(f'{module} -> {", ".join(sorted(targets)) or "-"}')
    sys.exit(0)


LIBRARIES = ('torch', 'mmengine', 'mmdet', 'mmcv', 'timm', 'sys')
# settings these libraries document as such, not patches: backend flags, the command line of a tool run in-process,
# and Python's hook for how an uncaught exception is shown (set in pit_det/extensions.py only, for mmdet's own
# scripts under `mim train`, which catch nothing: see docs/extensions.md)
SETTINGS = ('torch.backends.', 'sys.argv', 'sys.excepthook')


def library_names(tree: ast.Module) -> dict[str, str]:
    """Each name a module binds to a library object (``import torch``, ``from mmengine.x import HistoryBuffer``), with
    the dotted path it stands for."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split('.')[0] in LIBRARIES:
                    names[alias.asname or alias.name.split('.')[0]] = (
                        alias.name if alias.asname else alias.name.split('.')[0]
                    )
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module.split('.')[0] in LIBRARIES:
            for alias in node.names:
                names[alias.asname or alias.name] = f'{node.module}.{alias.name}'
    return names


def dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ``['a', 'b', 'c']``; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    return [node.id, *parts] if isinstance(node, ast.Name) else None


def library_assignments(path: Path) -> list[str]:
    """Every assignment (``=``, ``+=``, ``del``, ``setattr``) to an attribute of an object a module holds from one of
    :data:`LIBRARIES`, as ``file:line dotted.path``, settings excepted."""
    tree = ast.parse(path.read_text())
    names = library_names(tree)
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ('setattr', 'delattr'):
            targets = [ast.Attribute(value=node.args[0], attr='?')]
        for target in targets:
            chain = dotted(target) if isinstance(target, ast.Attribute) else None
            if chain and chain[0] in names:
                full = '.'.join([names[chain[0]], *chain[1:]])
                if not full.startswith(SETTINGS):
                    found.append(f'{path.relative_to(ROOT)}:{node.lineno} {full}')
    return found


def test_no_module_assigns_to_another_librarys_attributes():
    """pit-det changes torch, mmengine, mmdet, mmcv, timm and sys only through their extension points (registries,
    allow-lists, loader schemes), all in pit_det/extensions.py: no patch by assignment, anywhere."""
    assert [hit for p in sorted(PACKAGE.rglob('*.py')) for hit in library_assignments(p)] == []
    sets_the_hook = {p.name for p in PACKAGE.rglob('*.py') if 'sys.excepthook =' in p.read_text()}
    assert sets_the_hook <= {'extensions.py'}


def test_the_detector_traces_as_it_is():
    """No export patches torch or swaps a class around a trace: the one class change is where ops installs its
    deformable attention, and PiT has one forward for eager and trace."""
    texts = {p.relative_to(ROOT).as_posix(): p.read_text() for p in PACKAGE.rglob('*.py')}
    assert [f for f, t in texts.items() if 'torch.linspace =' in t or 'torch.jit.is_tracing()' in t] == []
    assert [f for f, t in texts.items() if '__class__ =' in t] == ['pit_det/ops/ms_deform_attn.py']
