"""Training checkpoints: safetensors for every tensor, JSON for the rest. Never pickle.

OUT/config.json                 the TrainConfig (what --resume rebuilds the run from)
OUT/latest/ and OUT/best/       model.safetensors (+ architecture config in its metadata),
                                state.safetensors (loss parameters, optimizer moments),
                                state.json (epoch, metrics, labels, threshold, optimizer
                                hyper-parameters, data spec, git commit)
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import torch

from fashion_match.errors import FmError
from fashion_match.fileio import atomic_open, write_json_atomic
from fashion_match.formats import WEIGHTS
from fashion_match.models.checkpoint import save_weights


def git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training(
    folder: Path, model: Any, loss: torch.nn.Module, opt: torch.optim.Optimizer, info: dict[str, Any]
) -> None:
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / WEIGHTS)
    tensors, opt_meta = _flatten_optimizer(opt)
    tensors.update({f"loss.{k}": v.detach().cpu().contiguous() for k, v in loss.state_dict().items()})
    with atomic_open(folder / "state.safetensors", "wb") as f:
        f.write(save(tensors))
    write_json_atomic(folder / "state.json", {**info, "optimizer": opt_meta, "model_config": model.config()})


def load_training(folder: Path, model: Any, loss: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors.torch import load_file

    for name in (WEIGHTS, "state.safetensors", "state.json"):
        if not (folder / name).is_file():
            raise FmError(f"--resume {folder.parent}: {folder / name} is missing; nothing to resume from")
    info = _state(folder)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
        tensors = load_file(str(folder / "state.safetensors"))
        loss.load_state_dict({k.removeprefix("loss."): v for k, v in tensors.items() if k.startswith("loss.")})
        opt.load_state_dict(_unflatten_optimizer(tensors, info["optimizer"]))
    except FmError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors and torch raise their own types for a damaged file
        raise FmError(f"--resume {folder.parent}: {folder} cannot be loaded ({type(e).__name__}: {e})") from None
    return info


def completed_epochs(run_dir: Path) -> int:
    """How many epochs the run in `run_dir` has finished (its latest/ checkpoint); 0 when none."""
    if not (run_dir / "latest" / "state.json").is_file():
        return 0
    epoch = _state(run_dir / "latest").get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise FmError(f"{run_dir / 'latest' / 'state.json'}: 'epoch' is not an epoch number")
    return epoch + 1


def _state(folder: Path) -> dict[str, Any]:
    """state.json of a checkpoint folder, strict JSON with the fields the loaders read."""
    from fashion_match.schema import field, read_json, require_object

    path = folder / "state.json"
    info = require_object(read_json(path, FmError, "a checkpoint state"), path, FmError, "a checkpoint state")
    for key in ("model_config", "optimizer"):
        field(info, key, "object", path, FmError, required=key == "model_config")
    return info


def load_for_export(run_dir: str | Path, which: str = "best") -> tuple[Any, dict[str, Any]]:
    """The trained EmbeddingModel of an fm-train output directory, and its state.json."""
    from fashion_match.models.checkpoint import load_weights

    folder = Path(run_dir) / which
    if not (folder / "state.json").is_file():
        raise FmError(f"{run_dir}: no {which}/state.json; pass an fm-train output directory")
    info = _state(folder)
    return load_weights(folder / WEIGHTS, info["model_config"]), info
