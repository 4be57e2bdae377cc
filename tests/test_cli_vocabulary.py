"""One command-line vocabulary: docs/cli.md lists every command's flags, every command in the docs uses flags its
command has, and no parser keeps the retired spellings."""

import argparse
import importlib
import re

import pytest
import tomllib

RETIRED = {'--json', '--plots', '--sizes', '--shape', '--onnx'}  # now --out, --out-dir, --size, --model-file


def commands(root) -> dict[str, str]:
    """Console command -> its cli module, for the commands with a parser of pit-det's own."""
    scripts = tomllib.loads((root / 'pyproject.toml').read_text())['project']['scripts']
    return {
        name: target.split(':')[0]
        for name, target in scripts.items()
        if not target.endswith(('train_main', 'test_main'))
    }


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
        assert (
            isinstance(parser.formatter_class, type)
            and parser.formatter_class is argparse.RawDescriptionHelpFormatter
            and parser.epilog
        ), f'{name}: not built by parser_from_doc'
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
    by_tool = {
        tool: parser_of(module) for tool, module in tool_modules(root).items() if module != 'pit_det.cli.mmdet_tools'
    }
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


@pytest.mark.parametrize(
    'module,argv',
    [
        ('benchmark', ['pit-ti']),
        ('benchmark_deform_attn', []),
        ('analyze_attention', ['pit-ti']),
        ('export_onnx', ['pit_s_deformable_detr', 'none', '--out', 'x.onnx']),
    ],
)
@pytest.mark.parametrize('size', ['99999x99999', '0x0', '400x0'])
def test_a_size_no_detector_takes_is_refused_by_the_parser(module, argv, size, capsys):
    """99999x99999 asked torch for 120-212 GB (a MemoryError traceback); 0x0 ended in a traceback too."""
    import importlib

    main = importlib.import_module(f'pit_det.cli.{module}').main
    with pytest.raises(SystemExit) as stop:
        main([*argv, '--size', size])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"size '{size}': each side from 1 to 8192 px" in err and 'Traceback' not in err


def test_export_refuses_a_size_under_its_minimum_before_reading_the_checkpoint(tmp_path, capsys):
    from pit_det.cli.export_onnx import main

    not_read = tmp_path / 'unread.pth'
    not_read.write_bytes(b'not a checkpoint: reading it would be the error')
    assert main(['pit_s_deformable_detr', str(not_read), '--out', str(tmp_path / 'x.onnx'), '--size', '1x1']) == 1
    err = capsys.readouterr().err
    assert err.strip() == 'error: --size 1x1: this detector needs at least 32 px per side'


def test_a_command_that_runs_out_of_memory_ends_with_one_error_line(capsys):
    """torch's allocator refuses at once what the machine cannot hold: the command says so, without a traceback."""
    import torch

    from pit_det.cli import command

    @command
    def main(argv=None):
        torch.empty(2**45)  # 128 TiB of float32
        return 0

    assert main() == 1
    err = capsys.readouterr().err
    assert err.startswith('error: out of memory (') and "can't allocate memory" in err and 'Traceback' not in err
    assert 'use a smaller --size or batch' in err

    @command
    def other(argv=None):
        raise RuntimeError('another failure')  # not about memory: raised as it is

    with pytest.raises(RuntimeError, match='another failure'):
        other()
