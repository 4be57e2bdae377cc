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
    'runner': {'preflight', 'models', 'checkpoint', 'outputs'},
    'draw': {'models', 'data', 'outputs'},
    'demo': {'configs', 'data', 'draw'},
    'benchmark': {'configs', 'models', 'ops', 'data', 'deploy', 'outputs', '__init__'},  # __init__: registration in a fresh process
    '__init__': {'models', 'runner', 'checkpoint', 'deploy'},
    'analysis': {'models', 'checkpoint', 'ops', 'data', 'outputs', 'configs', 'demo'},  # demo: the convergence study trains the demos
    'evaluation': {'data', 'outputs'},
    'deploy': {'models', 'checkpoint', 'ops', 'data', 'outputs'},
    'acceptance': {'benchmark', 'configs', 'ops'},  # the GPU acceptance run: the benchmark's timing, the kernel
    'cli': {'acceptance', 'analysis', 'benchmark', 'checkpoint', 'configs', 'data', 'demo', 'deploy', 'draw', 'evaluation', 'models',
            'ops', 'outputs', 'preflight', 'runner', '__init__'},
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
            base = package[:len(package) - node.level + 1] if node.level else []
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
    upward = [f'{m} imports {t}' for m, targets in graph().items() for t in targets
              if layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)]]
    assert upward == []


def test_models_never_import_deployment_and_ops_import_nothing_of_pit_det():
    edges = graph()
    assert not [f'{m} imports {t}' for m, targets in edges.items() if layer(m) == 'models' for t in targets
                if layer(t) == 'deploy']
    assert not [f'{m} imports {t}' for m, targets in edges.items() if layer(m) == 'ops' for t in targets
                if layer(t) != 'ops']
    assert not [f'{m} imports {t}' for m, targets in edges.items() if layer(m) == 'checkpoint' for t in targets
                if layer(t) == 'models']


def test_no_module_exceeds_400_lines():
    assert not [f'{module_name(p)}: {n}' for p in PACKAGE.rglob('*.py') if (n := len(p.read_text().splitlines())) > 400]


def test_every_main_is_in_cli_and_tools_are_thin():
    mains = [module_name(p) for p in PACKAGE.rglob('*.py')
             if any(isinstance(n, ast.FunctionDef) and n.name.endswith('main') for n in ast.parse(p.read_text()).body)]
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
