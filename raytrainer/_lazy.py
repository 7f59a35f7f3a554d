"""Packages whose public names import their modules on first use."""

import importlib
import importlib.util


def lazy_names(package: str, module_of: dict, namespace: dict, subpackages: bool = False):
    """The ``(__getattr__, __dir__)`` of ``package``, whose public names ``module_of`` maps to the
    (relative) modules that define them; ``namespace`` is the package's ``globals()``. With
    ``subpackages``, any other public name imports the package's module of that name."""

    def __getattr__(name: str):
        module = module_of.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module, package), name)
        elif subpackages and not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f".{name}", package)  # raytrainer.callbacks, as before
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # later lookups are plain attribute reads
        return value

    def __dir__():
        return sorted(set(namespace) | set(module_of))

    return __getattr__, __dir__
