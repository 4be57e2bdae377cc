"""One command-line vocabulary: docs/cli.md lists every command's flags, every command in the docs uses flags its
command has, and no parser keeps the retired spellings."""
import argparse
import importlib
import re
import tomllib

import pytest

RETIRED = {'--json', '--plots', '--sizes', '--shape', '--onnx'}  # now --out, --out-dir, --size, --model-file


def commands(root) -> dict[str, str]:
    """Console command -> its cli module, for the commands with a parser of pit-det's own."""
    scripts = tomllib.loads((root / 'pyproject.toml').read_text())['project']['scripts']
    return {name: target.split(':')[0] for name, target in scripts.items() if not target.endswith(('train_main',
                                                                                                   'test_main'))}


def parser_of(module: str) -> argparse.ArgumentParser:
    """The parser a cli module builds, caught as it parses."""
    caught = []

    def catch(self, args=None, namespace=None):
        caught.append(self)
        raise SystemExit(0)
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        with pytest.raises(SystemExit):
            importlib.import_module(module).parse_args([])
    finally:
        argparse.ArgumentParser.parse_args = original
    return caught[0]


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings if s.startswith('--')} - {'--help'}


def tool_modules(root) -> dict[str, str]:
    """``tools/NAME.py`` -> the cli module it calls."""
    found = {}
    for tool in (root / 'tools').glob('*.py'):
        match = re.search(r'from (pit_det\.cli\.\w+) import', tool.read_text())
        found[tool.name] = match.group(1)
    return found


def test_every_parser_is_built_one_way_and_keeps_no_retired_flag(root):
    for name, module in commands(root).items():
        parser = parser_of(module)
        assert isinstance(parser.formatter_class, type) and parser.formatter_class is \
            argparse.RawDescriptionHelpFormatter and parser.epilog, f'{name}: not built by parser_from_doc'
        assert not flags(parser) & RETIRED, name
        assert all(action.help != argparse.SUPPRESS for action in parser._actions), f'{name}: a hidden flag'


def test_the_table_lists_every_command_and_flag(root):
    table = {}
    for line in (root / 'docs' / 'cli.md').read_text().splitlines():
        for name in re.findall(r'`(pit-det-[\w-]+)`', line.split('|')[1] if line.startswith('|') else ''):
            table[name] = line
    for name, module in commands(root).items():
        assert name in table, f'docs/cli.md has no row for {name}'
        listed = set(re.findall(r'`(--[\w-]+)', table[name]))
        assert listed == flags(parser_of(module)), (name, listed ^ flags(parser_of(module)))


def command_lines(text: str):
    """Each command written in a page: ``pit-det-NAME ...`` or ``python tools/NAME.py ...``, joined across
    backslash-continued lines, up to a comment or the end of inline code."""
    text = text.replace('\\\n', ' ')
    for match in re.finditer(r'(pit-det-[\w-]+|tools/\w+\.py)([^`\n#]*)', text):
        yield match.group(1), match.group(2)


def test_every_command_in_the_docs_uses_flags_its_command_has(root):
    by_name = {name: parser_of(module) for name, module in commands(root).items()}
    by_tool = {tool: parser_of(module) for tool, module in tool_modules(root).items()
               if module != 'pit_det.cli.mmdet_tools'}
    pages = [root / 'README.md', root / 'configs' / 'README.md', *(root / 'docs').glob('*.md')]
    checked = 0
    for page in pages:
        for command, rest in command_lines(page.read_text()):
            parser = by_name.get(command) or by_tool.get(command.removeprefix('tools/'))
            if parser is None:
                continue  # pit-det-train/-test and tools/train.py, test.py: mmdet's own flags
            used = set(re.findall(r'(?<![\w-])(--[a-z][\w-]*)', rest))
            assert used <= flags(parser), f'{page.name}: {command}{rest} uses {sorted(used - flags(parser))}'
            checked += 1
    assert checked >= 30
