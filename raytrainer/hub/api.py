"""The Hugging Face Hub client as the Trainer uses it.

``HF_ENDPOINT`` is read when a call is made (``huggingface_hub`` reads it once, at import), errors
say what to do, and the token never appears in a message: each message is scrubbed of it.
"""

import os

# Files that make up a saved model in a checkpoint folder (shards are added from the index files).
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin",
               "training_args.json", "training_args.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def endpoint():
    """The Hub to talk to: ``HF_ENDPOINT`` when set, else ``huggingface_hub``'s default."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None


def endpoint_name() -> str:
    from huggingface_hub import constants

    return endpoint() or constants.ENDPOINT


def hub_api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


def _scrub(text: str, token) -> str:
    return text.replace(token, "<hub_token>") if isinstance(token, str) and token else text


def _is_network_error(error: BaseException) -> bool:
    # huggingface_hub's HTTP client raises its own transport errors (an httpx fork), older
    # versions requests' ConnectionError; OfflineModeIsEnabled is HF_HUB_OFFLINE=1
    import socket

    names = {cls.__name__ for cls in type(error).__mro__}
    network = (ConnectionError, TimeoutError, socket.gaierror, socket.herror)
    return isinstance(error, network) or bool(names & {"TransportError", "OfflineModeIsEnabled"})


def hub_error(error: BaseException, action: str, token) -> Exception:
    """A clear error for a failed Hub call: unreachable, refused credentials, or the Hub's reason."""
    where = endpoint_name()
    detail = _scrub(f"{type(error).__name__}: {error}", token)
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status is None and _is_network_error(error):
        return ConnectionError(
            f"push_to_hub: the Hugging Face Hub at {where} cannot be reached to {action} ({detail}). Check the "
            "network or HF_ENDPOINT, or set push_to_hub=False to train without uploading."
        )
    if status in (401, 403):
        return PermissionError(
            f"push_to_hub: the Hub at {where} refused to {action} (HTTP {status}). Pass a token with write "
            "access as TrainingArguments.hub_token, set HF_TOKEN, or log in with `hf auth login`."
        )
    return RuntimeError(f"push_to_hub: could not {action} on the Hub at {where}: {detail}")


def create_repo(name: str, token, private) -> str:
    """Create the model repository (or find it, when it exists); returns its ``namespace/name``."""
    try:
        url = hub_api().create_repo(name, token=token, private=private, exist_ok=True)
    except Exception as error:  # noqa: BLE001 - every failure is translated into one clear error
        raise hub_error(error, f"create the repository {name!r}", token) from None
    return url.repo_id


def model_files(folder: str) -> list:
    """The names of the files in ``folder`` that make up a saved model (weights, their shards,
    configs, the training arguments)."""
    import json

    names = [name for name in MODEL_FILES if os.path.isfile(os.path.join(folder, name))]
    for index in INDEX_FILES:
        path = os.path.join(folder, index)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                shards = sorted(set(json.load(f).get("weight_map", {}).values()))
            names += [index] + shards
    return names
