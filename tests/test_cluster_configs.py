"""Every file of cluster/ is usable as written: the launcher config passes Ray's own schema, the
commands use flags `ray start` has, the project is installed from the files the configs ship (never
`pip install raytrainer` from an index), the KubeRay job runs a config that exists and checks out,
and the local cluster script stops only its own cluster."""

import ast
import os
import re
import shlex
import subprocess

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(REPO, "cluster")
IMAGE_ROOT = "/home/ray/raytrainer"  # where cluster/Dockerfile copies the repository


def load(name):
    with open(os.path.join(CLUSTER, name)) as f:
        return yaml.safe_load(f)


def ray_start_options() -> set:
    from ray.scripts.scripts import start

    return {option for param in start.params for option in param.opts}


def ray_start_flags(command: str) -> list:
    """The --flags of every `ray start` in a shell line (`a; b; ray start --x=1 --y 2`)."""
    flags = []
    for part in re.split(r"[;&|]+", command):
        words = shlex.split(part)
        if words[:2] == ["ray", "start"]:
            flags += [word.split("=", 1)[0] for word in words[2:] if word.startswith("--")]
    return flags


def extras() -> set:
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


def cluster_files() -> list:
    return sorted(name for name in os.listdir(CLUSTER) if os.path.isfile(os.path.join(CLUSTER, name)))


def test_no_file_installs_raytrainer_from_a_package_index():
    for name in cluster_files():
        with open(os.path.join(CLUSTER, name)) as f:
            text = f.read()
        assert not re.search(r"pip install (-\S+ )*raytrainer\b", text), name


def test_launcher_config_passes_rays_schema_and_installs_the_mounted_repository():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("ray-cluster.yaml")
    validate_config(prepare_config(dict(config)))
    mounts = config["file_mounts"]
    assert mounts["~/raytrainer"] == "."  # `ray up` from the repository root ships the repository
    install = [c for c in config["setup_commands"] if "pip install" in c and "raytrainer" in c]
    assert install == ['python3 -m pip install -e "$HOME/raytrainer[cluster]"']
    assert "cluster" in extras()
    options = ray_start_options()
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert set(ray_start_flags(command)) <= options, command
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert "--dashboard-host=0.0.0.0" in starts[0]  # the job server answers beyond the head


def test_dockerfile_copies_the_repository_and_installs_it_with_existing_extras():
    with open(os.path.join(CLUSTER, "Dockerfile")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    text = "\n".join(lines)
    copy = next(line for line in lines if line.startswith("COPY"))
    assert copy.split()[-2:] == [".", IMAGE_ROOT]  # built with the repository root as context
    (wanted,) = re.findall(r'pip install --no-cache-dir -e "([^"\[]+)\[([^\]]+)\]"', text)
    assert wanted[0] == IMAGE_ROOT and set(wanted[1].split(",")) <= extras()
    assert re.search(r"ARG BASE_IMAGE=rayproject/ray:2\.60\.0-py3\d+", text)
    assert os.path.isfile(os.path.join(REPO, ".dockerignore"))


def kuberay_pod_specs(spec: dict):
    yield spec["headGroupSpec"]
    yield from spec["workerGroupSpecs"]


def check_raycluster_spec(spec: dict, images: set) -> None:
    import ray

    assert spec["rayVersion"] == ray.__version__ and spec["authOptions"] == {"mode": "token"}
    options = ray_start_options()
    for group in kuberay_pod_specs(spec):
        assert {f"--{key}" for key in group["rayStartParams"]} <= options
        pod = group["template"]["spec"]
        volumes = {volume["name"] for volume in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert container["image"] in images, container["image"]
            assert {mount["name"] for mount in container.get("volumeMounts", [])} <= volumes


def test_kuberay_raycluster_runs_the_images_the_dockerfile_builds():
    config = load("kuberay-raycluster.yaml")
    assert (config["apiVersion"], config["kind"]) == ("ray.io/v1", "RayCluster")
    check_raycluster_spec(config["spec"], {"raytrainer:0.1.0", "raytrainer:0.1.0-gpu"})
    with open(os.path.join(CLUSTER, "Dockerfile")) as f:
        dockerfile = f.read()
    assert "-t raytrainer:0.1.0 ." in dockerfile and "-t raytrainer:0.1.0-gpu" in dockerfile


def test_kuberay_rayjob_runs_raytrainer_train_on_a_config_that_checks_out(monkeypatch):
    from raytrainer.cli.build import arguments_class, trainer_class, training_arguments
    from raytrainer.cli.config import load_config

    config = load("kuberay-rayjob.yaml")
    assert (config["apiVersion"], config["kind"]) == ("ray.io/v1", "RayJob")
    check_raycluster_spec(config["spec"]["rayClusterSpec"], {"raytrainer:0.1.0"})
    cd, command = [shlex.split(part) for part in config["spec"]["entrypoint"].split("&&")]
    assert cd[0] == "cd" and cd[1].startswith(IMAGE_ROOT) and command[:2] == ["raytrainer", "train"]
    folder = os.path.join(REPO, os.path.relpath(cd[1], IMAGE_ROOT))
    monkeypatch.chdir(folder)
    checked = load_config(command[2])
    args = training_arguments(checked, command[3:], arguments_class(trainer_class(checked)), "raytrainer train")
    mounts = {m["mountPath"] for group in kuberay_pod_specs(config["spec"]["rayClusterSpec"])
              for c in group["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])}
    assert any(args.output_dir.startswith(mount + "/") for mount in mounts)  # checkpoints on the shared volume
    workers = sum(group["replicas"] for group in config["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    assert checked.section("scaling")["num_workers"] <= workers


def test_local_cluster_script_stops_only_its_own_cluster():
    script = os.path.join(CLUSTER, "local_multinode.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    with open(script) as f:
        commands = [line for line in f if not line.lstrip().startswith("#")]
    assert not any("ray stop" in line for line in commands)
    assert any('local_multinode.py" "$@"' in line for line in commands)
    with open(os.path.join(CLUSTER, "local_multinode.py")) as f:
        tree = ast.parse(f.read())
    ray_calls = [node for node in ast.walk(tree) if isinstance(node, ast.List) and node.elts
                 and isinstance(node.elts[0], ast.Call) and getattr(node.elts[0].func, "id", "") == "ray_command"]
    assert ray_calls and all(isinstance(n.elts[1], ast.Constant) and n.elts[1].value == "start" for n in ray_calls)
    source = ast.unparse(tree)
    assert "--temp-dir=" in source and "--block" in source


@pytest.mark.parametrize("name", cluster_files())
def test_the_cluster_readme_describes_every_file(name):
    with open(os.path.join(CLUSTER, "README.md")) as f:
        assert name == "README.md" or f"`{name}`" in f.read()
