"""pyproject.toml holds the project; this adds what a wheel carries for OpenMMLab's ``mim``.

As mmdet's ``setup.py`` (``add_mim_extension``) does, a built wheel carries ``configs/``, ``tools/`` and
``model-index.yml`` under ``pit_det/.mim/``: ``mim search pit_det`` lists the configs, ``mim train pit_det NAME``
finds one by name, and pit-det's own commands find configs by name outside a checkout. An editable install reads
them from the checkout instead (``pit_det/configs.py``).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
MIM_FILES = ('configs', 'tools', 'model-index.yml')


class BuildPyWithMim(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        mim = Path(self.build_lib) / 'pit_det' / '.mim'
        for name in MIM_FILES:
            source, target = ROOT / name, mim / name
            if not source.exists():
                raise FileNotFoundError(f'{source} is missing: a wheel of pit-det must carry it for mim')
            if target.is_dir():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copy2(source, target)


setup(cmdclass={'build_py': BuildPyWithMim})
