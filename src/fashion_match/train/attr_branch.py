"""Training an attribute branch with its attribute spaces (fm-train --spaces-for DIR --from-block K).

Spaces on frozen maps can only weigh what the item model kept, and an item model trained to ignore
colour shifts has thrown much colour away. The branch is the model's own copy of the blocks from K
on (the category branch's, when the model has one from the same block: it already knows
categories), fine-tuned with the spaces' proxy loss, and early blocks' outputs (`taps`) join its
maps so colour and texture reach the spaces. The trunk before K stays frozen and shared: its output
and the taps, pooled onto its grid, are computed once (runtime preprocessing) and the branch trains
on them with random flips and shifts. One checkpoint per epoch in OUT/latest (the whole model,
proxies, optimizer); a run interrupted is continued from it by the same command, and each epoch's
random draws depend only on the seed and the epoch, so a resumed run equals an uninterrupted one.

The branch trains on the GPU when there is one (the cached maps stay in host memory and go over
batch by batch). Under torchrun every rank caches the maps itself (the same deterministic pass) and
takes its own share of each step's batch; DDP averages the gradients, BatchNorm statistics are
averaged each epoch, and rank 0 evaluates and writes the checkpoints.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fashion_match.data.attributes import Attribute
from fashion_match.errors import UsageError
from fashion_match.models.attr_spaces import AttributeSpaces, ValueProxies
from fashion_match.models.embedding import EmbeddingModel
from fashion_match.train.cached import augment_maps, cpu_outputs

log = logging.getLogger(__name__)
CL = torch.channels_last  # oneDNN's depthwise convolutions train faster on CPU in this layout


class TrunkAndTaps(nn.Module):
    """The frozen trunk's output, with the taps average-pooled onto its grid, channel-stacked."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.model.attr_from
        _, saved = self.model._run_blocks(x, {k, *(t + 1 for t in self.model.attr_taps)})  # type: ignore[arg-type]
        trunk = saved[k]  # type: ignore[index]
        taps = [F.avg_pool2d(saved[t + 1], saved[t + 1].shape[-1] // trunk.shape[-1]) for t in self.model.attr_taps]
        return torch.cat([trunk, *taps], dim=1)


class BranchLoss(nn.Module):
    """The branch, its spaces and the value proxies as one module, so DDP keeps all of them in step."""

    def __init__(self, net: BranchSpaces, proxies: ValueProxies) -> None:
        super().__init__()
        self.net, self.proxies = net, proxies

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proxies(self.net(x), y)  # type: ignore[no-any-return]


class BranchSpaces(nn.Module):
    """Cached trunk+taps -> branch -> (branch maps, taps pooled onto them) -> attribute spaces;
    the same arithmetic as EmbeddingModel.head_maps followed by its spaces."""

    def __init__(self, model: EmbeddingModel, trunk_channels: int) -> None:
        super().__init__()
        self.branch, self.spaces, self.c = model.attr_branch, model.attr_spaces, trunk_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.branch(x[:, : self.c])  # type: ignore[misc]
        if x.shape[1] > self.c:
            v = torch.cat([v, F.avg_pool2d(x[:, self.c :], x.shape[-1] // v.shape[-1])], dim=1)
        return self.spaces(v)  # type: ignore[misc,no-any-return]


def prepare(model: EmbeddingModel, from_block: int, taps: tuple[int, ...], attrs: list[Attribute], dim: int) -> str:
    """Give `model` an attribute branch and fresh spaces (seed torch first: they start random); say
    where the branch's weights came from."""
    model.add_attribute_branch(from_block, taps)
    origin = f"the item path's blocks {from_block}-"
    if model.category_branch is not None and model.branch_from == from_block:
        model.attr_branch = copy.deepcopy(model.category_branch)
        origin = f"the category branch (blocks {from_block}-)"
    s = model.preprocess.size
    with torch.no_grad():
        probe = TrunkAndTaps(model)(torch.zeros(1, 3, s, s))
        out = model.attr_branch(probe[:, : _trunk_channels(model)])  # type: ignore[misc]
    if probe.shape[-1] % out.shape[-1]:
        raise UsageError(f"--from-block {from_block}: its grid {probe.shape[-1]} is not a multiple of the branch's")
    model.attach_spaces(
        AttributeSpaces(model.head_dim, len(attrs), dim), [a.name for a in attrs], [list(a.values) for a in attrs]
    )
    return origin


def _trunk_channels(model: EmbeddingModel) -> int:
    s = model.preprocess.size
    with torch.no_grad():
        _, saved = model._run_blocks(torch.zeros(1, 3, s, s), {model.attr_from})  # type: ignore[arg-type]
    return int(saved[model.attr_from].shape[1])  # type: ignore[index]


def cached_inputs(
    model: EmbeddingModel, records: list[Any], desc: str, progress: bool
) -> tuple[torch.Tensor, list[int]]:
    return cpu_outputs(TrunkAndTaps(model).eval(), model, records, pool=False, desc=desc, progress=progress)


@torch.no_grad()
def embed_cached(net: BranchSpaces, x: torch.Tensor, chunk: int = 256) -> Any:
    net.eval()
    dev = next(net.parameters()).device
    parts = [net(x[s : s + chunk].to(dev).contiguous(memory_format=CL)).cpu() for s in range(0, len(x), chunk)]
    return torch.cat(parts).numpy()


def fit_branch(
    model: EmbeddingModel,
    x: dict[str, torch.Tensor],
    y: dict[str, torch.Tensor],
    attrs: list[Attribute],
    run_dir: Path,
    cfg: dict[str, Any],
    evaluate: Any,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fine-tune `model`'s attribute branch and spaces on cached inputs `x["train"]`; checkpoint each
    epoch in run_dir/latest and continue from there when it holds the same configuration.
    `evaluate(net)` gives the test figures recorded per epoch."""
    import torch.distributed as dist

    from fashion_match.progress import Bar, say
    from fashion_match.train.checkpoint import load_training, save_training
    from fashion_match.train.distributed import average_buffers, ranks

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = torch.device(f"cuda:{ranks()[2]}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg["seed"])  # the proxies' initial values
    net = BranchSpaces(model, _trunk_channels(model))
    sizes, dim = [len(a.values) for a in attrs], int(model.attr_spaces.dim)  # type: ignore[union-attr,arg-type]
    proxies = ValueProxies(sizes, dim, cfg["scale"], cfg["margin"])
    both = BranchLoss(net, proxies).to(device)
    net.branch.to(memory_format=CL)  # type: ignore[union-attr]
    lr, branch_lr, epochs, batch = cfg["lr"], cfg["branch_lr"], cfg["epochs"], cfg["batch"]
    opt = torch.optim.AdamW(
        [
            {"params": net.branch.parameters(), "lr": branch_lr},  # type: ignore[union-attr]
            {"params": [*net.spaces.parameters(), *proxies.parameters()], "lr": lr},  # type: ignore[union-attr]
        ],
        weight_decay=0.01,
    )
    steps = max(1, len(x["train"]) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [branch_lr, lr], total_steps=epochs * steps, pct_start=0.1)
    history: list[dict[str, Any]] = []
    latest = run_dir / "latest"
    if (latest / "state.json").is_file():
        info = json.loads((latest / "state.json").read_text())
        if info.get("attribute_branch_config") != cfg:
            raise UsageError(
                f"{run_dir}: holds an attribute-branch run with other settings "
                f"({info.get('attribute_branch_config')}); choose another --out"
            )
        load_training(latest, model, proxies, opt)
        history = list(info["history"])
        for _ in range(len(history) * steps):  # the schedule is a pure function of the step
            sched.step()
        left = f"from epoch {len(history) + 1} of {epochs}" if len(history) < epochs else f"after all {epochs} epochs"
        say(f"resuming {run_dir} {left}")
    step_fn: nn.Module = both
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_fn = DDP(both, device_ids=[device.index] if device.type == "cuda" else None)
    t0 = time.perf_counter()
    show = progress and rank == 0
    with Bar((epochs - len(history)) * steps, "attribute branch", unit="step", enabled=show) as bar:
        for epoch in range(len(history), epochs):
            torch.manual_seed(cfg["seed"] + epoch)  # the same permutation on every rank
            perm = torch.randperm(len(x["train"]))
            net.train()
            for s in range(steps):
                i = perm[s * batch : (s + 1) * batch][rank::world]  # this rank's share of the step
                xb = augment_maps(x["train"][i], flip=True, shift=cfg["shift"])
                loss = step_fn(xb.to(device).contiguous(memory_format=CL), y["train"][i].to(device))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
            if world > 1:
                average_buffers(both, world)
            if rank == 0:
                history.append({"epoch": epoch, **evaluate(net), "seconds": round(time.perf_counter() - t0)})
                log.info("attribute branch: %s", json.dumps(history[-1]))
                net.branch.to(memory_format=torch.contiguous_format)  # type: ignore[union-attr]
                save_training(
                    latest, model, proxies, opt, {"epoch": epoch, "history": history, "attribute_branch_config": cfg}
                )
                net.branch.to(memory_format=CL)  # type: ignore[union-attr]
            else:
                history.append({"epoch": epoch})
            if world > 1:
                dist.barrier()  # rank 0's checkpoint is written before anyone goes on
    net.branch.to(memory_format=torch.contiguous_format)  # type: ignore[union-attr]
    both.to("cpu")  # what follows (thresholds, export) runs on the CPU copy of the model
    return history
