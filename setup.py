"""Build hook: the search-space presets of ``searchspaces/`` travel inside the wheel, as
``raytrainer/searchspaces/``, so ``load_search_space("finetune_small")`` works for an installed
package as it does in a checkout. Everything else is in pyproject.toml."""

import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PRESETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "searchspaces")


class BuildWithPresets(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "raytrainer", "searchspaces")
        os.makedirs(target, exist_ok=True)
        for path in glob.glob(os.path.join(PRESETS, "*.yaml")) + [os.path.join(PRESETS, "README.md")]:
            shutil.copy2(path, target)


setup(cmdclass={"build_py": BuildWithPresets})
