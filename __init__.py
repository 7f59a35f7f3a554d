"""This file only runs when the raytrainer *checkout* is imported as the package ``raytrainer``:
a script started in the folder that contains a checkout named ``raytrainer/`` finds the
checkout first (Python puts the script's folder first on ``sys.path``). Without this file the
checkout would be an empty namespace package and ``from raytrainer import Trainer`` would fail
with "cannot import name 'Trainer' from 'raytrainer' (unknown location)".

It loads the package inside the checkout under its own name, and warns when that shadows a
different raytrainer installed in this environment.
"""

import importlib.util
import os
import sys
import warnings

_PACKAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "raytrainer")


def _installed_elsewhere():
    """The folder of an installed (non-editable) raytrainer other than this checkout's, if any."""
    from importlib import metadata

    try:
        init = metadata.distribution("raytrainer").locate_file("raytrainer/__init__.py")
    except metadata.PackageNotFoundError:
        return None
    init = os.path.abspath(os.fspath(init))
    same = os.path.normcase(os.path.dirname(init)) == os.path.normcase(_PACKAGE_DIR)
    return None if same or not os.path.exists(init) else os.path.dirname(init)


def _load_inner_package():
    spec = importlib.util.spec_from_file_location(__name__, os.path.join(_PACKAGE_DIR, "__init__.py"),
                                                  submodule_search_locations=[_PACKAGE_DIR])
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module  # what `import raytrainer` returns once this file has run
    spec.loader.exec_module(module)


if not os.path.isfile(os.path.join(_PACKAGE_DIR, "__init__.py")):
    raise ImportError(f"{os.path.dirname(_PACKAGE_DIR)} looks like a raytrainer checkout without its package "
                      "folder raytrainer/; run the script from another folder or restore the checkout.")
_other = _installed_elsewhere()
if _other is not None:
    warnings.warn(f"`import raytrainer` found the checkout at {os.path.dirname(_PACKAGE_DIR)} (a script runs "
                  f"in the folder that contains it) and uses its code, not the raytrainer installed at {_other}. "
                  "Run the script from another folder to use the installed one.", stacklevel=2)
_load_inner_package()
