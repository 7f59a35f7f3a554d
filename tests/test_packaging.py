"""What users get when they install the package rather than use the checkout, and a script started
next to a checkout."""

import glob
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = sorted(os.path.basename(path) for path in glob.glob(os.path.join(ROOT, "searchspaces", "*.yaml")))


@pytest.mark.slow
def test_the_wheel_carries_the_search_space_presets_and_loads_them(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), ROOT],
                   check=True, timeout=600, capture_output=True)
    (wheel,) = glob.glob(str(tmp_path / "raytrainer-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert PRESETS and all(f"raytrainer/searchspaces/{name}" in names for name in PRESETS)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # an installed package: no checkout beside it, run from an unrelated folder
    code = ("import raytrainer.hpo.presets as p; space = p.load_search_space('finetune_small'); "
            "print(p.find_preset('finetune_small')); print(sorted(space.names))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    path, parameters = done.stdout.splitlines()
    assert path == str(site / "raytrainer" / "searchspaces" / "finetune_small.yaml")
    assert "learning_rate" in parameters


def test_a_script_next_to_a_checkout_named_raytrainer_imports_the_package(tmp_path):
    os.symlink(ROOT, tmp_path / "raytrainer")  # a clone named like the package, beside the script
    script = tmp_path / "train.py"
    script.write_text("from raytrainer import Trainer, TrainingArguments\nimport raytrainer\n"
                      "print(Trainer.__module__, raytrainer.__file__)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    module, location = done.stdout.split()
    assert module == "raytrainer.trainer"
    assert location == str(tmp_path / "raytrainer" / "raytrainer" / "__init__.py")
