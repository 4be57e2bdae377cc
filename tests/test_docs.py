"""The README is an entry page that links every docs page, and every measured table says on which machine and when."""

import re


def test_readme_is_an_entry_page_linking_every_docs_page(root):
    readme = (root / 'README.md').read_text()
    assert len(readme.splitlines()) <= 200
    links = set(re.findall(r'\]\(([^)#]+)\)', readme))
    local = {link for link in links if not link.startswith('http')}
    assert all((root / link).exists() for link in local), sorted(link for link in local if not (root / link).exists())
    pages = {f'docs/{p.name}' for p in (root / 'docs').glob('*.md')}
    assert pages and pages <= local, sorted(pages - local)
    assert 'configs/README.md' in local


def test_docs_links_resolve(root):
    for page in [*(root / 'docs').glob('*.md'), root / 'configs' / 'README.md']:
        for link in re.findall(r'\]\(([^)#]+)\)', page.read_text()):
            if not link.startswith('http'):
                assert (page.parent / link).exists(), f'{page.name}: {link}'


def sections(text: str):
    """``(heading, body)`` for every ``##``/``###`` section."""
    parts = re.split(r'^(#{2,3} .*)$', text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


MACHINE = re.compile(r'AMD|Intel|Xeon|EPYC|NVIDIA|GPU')
DATE = re.compile(r'20\d\d-\d\d-\d\d')


def test_every_measured_table_names_its_machine_and_date(root):
    """A table of milliseconds, MiB, speed-ups or mAP sits in a section that names the CPU (or GPU) and the date."""
    pages = [*(root / 'docs').glob('*.md'), root / 'configs' / 'README.md', root / 'README.md']
    checked = 0
    for page in pages:
        for heading, body in sections(page.read_text()):
            tables = [
                line
                for line in body.splitlines()
                if line.startswith('|') and re.search(r'\bms\b|MiB|speed-up|mAP|/ R50|/ PiT-S', line)
            ]
            if not tables:
                continue
            checked += 1
            where = heading + body
            assert MACHINE.search(where) and DATE.search(where), f'{page.name}: {heading}'
    assert checked >= 5
