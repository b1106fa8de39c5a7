"""Training the projection heads from memory banks of embeddings (HanCLIP, "embeddings mode").

The loop reads top to bottom, nanoGPT-style:

1. semantic enhancement, once: every English caption gets a pseudo image (soft retrieval of
   its CLIP text embedding e^I from the image bank) and a pseudo Korean caption (soft
   retrieval of its multilingual embedding e^K from the Korean bank);
2. for every batch of captions: noise on e^I, e^K, v, k; project with f1 (CLIP side) and f2
   (multilingual side); L = InfoNCE(ê^I, ê^K; τ2) + InfoNCE(v̂, k̂; τ3) + λ·L_intra;
   AdamW step and a cosine learning-rate schedule over all steps;
3. at the end of every epoch, a checkpoint (safetensors) from which a rerun resumes.

Shuffling and noise are seeded per epoch from (seed, epoch), so a resumed run draws the same
numbers as an uninterrupted one and ends with the same weights.

A share of the captions (chosen from the seed, see `trainer.calibration`) is held out of
training; after the last epoch their pseudo pairs, unseen by the heads, fit the match
probability p(match) = sigmoid(a·cos + b) that the bundle carries.

On a GPU the four training columns (e^I, v, e^K, k) are copied to it once when they fit
(1M captions: 7 GB) and every batch is gathered there; otherwise each batch is gathered in
host memory (memmaps included) and copied over. Step losses stay on the device: the epoch's
mean is read once, and a progress report reads the previous step's loss, so the GPU always
has the current step queued.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

from hanclip_model.bundle import HEADS_NAME, write_bundle
from hanclip_model.device import pick_device
from hanclip_model.errors import HanclipError
from hanclip_model.files import atomic_path
from trainer.calibration import (
    NOISE_STREAM,
    CalibrationReport,
    calibrate,
    held_out_rows,
    not_calibrated,
    stream,
)
from trainer.heads import HanclipHeads
from trainer.losses import add_noise, info_nce, intra_loss
from trainer.retrieval import copy_to_device, fits_on_device, soft_retrieve

CHECKPOINT_NAME = "checkpoint.safetensors"
PSEUDO_PAIRS_NAME = "pseudo_pairs.npz"
_CHECKPOINT_KEY = "hanclip_checkpoint"
# Rows of each bank hashed to recognise a checkpoint's data without reading whole banks.
_FINGERPRINT_ROWS = 64
_COPY_ROWS = 65536  # rows per host-to-device copy of a training column


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the defaults are those of the reference code (τ1=τ2=τ3=0.01)."""

    epochs: int = 36
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 0.01
    tau_retrieval: float = 0.01  # τ1, semantic enhancement
    tau_inter: float = 0.01  # τ2, caption pivot: ê^I against ê^K
    tau_image_text: float = 0.01  # τ3, pseudo pairs: v̂ against k̂
    noise_std: float = 0.025  # σ
    intra_weight: float = 0.1  # λ
    seed: int = 0
    device: str | None = None  # None: settings.DEVICE, else CUDA when available, else CPU

    def __post_init__(self) -> None:
        # These come from command-line flags: say which one is wrong, as a user error.
        if self.epochs < 1:
            raise HanclipError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise HanclipError(f"batch size must be at least 2 (BatchNorm), got {self.batch_size}")
        for name in ("tau_retrieval", "tau_inter", "tau_image_text", "lr"):
            if getattr(self, name) <= 0:
                raise HanclipError(f"{name} must be positive, got {getattr(self, name)}")
        if self.noise_std < 0 or self.intra_weight < 0 or self.weight_decay < 0:
            raise HanclipError("noise_std, intra_weight and weight_decay cannot be negative")

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that shapes the trained weights (the device does not)."""
        return {k: v for k, v in asdict(self).items() if k != "device"}


@dataclass(frozen=True)
class TrainBanks:
    """The unpaired memory banks, as L2-normalised embeddings (np.memmap welcome)."""

    english_clip: np.ndarray  # e^I [N_E, d_img]: English captions, CLIP text tower
    english_text: np.ndarray  # e^K [N_E, d_txt]: the same captions, multilingual encoder
    image_bank: np.ndarray  # V [N_V, d_img]: CLIP image embeddings of unlabeled photos
    korean_bank: np.ndarray  # K [N_K, d_txt]: multilingual embeddings of Korean captions

    def __post_init__(self) -> None:
        # Banks come from users' files: a mismatch is reported as a user error.
        for name in ("english_clip", "english_text", "image_bank", "korean_bank"):
            array = getattr(self, name)
            if array.ndim != 2 or array.shape[0] == 0:
                raise HanclipError(f"{name} must be a non-empty [rows, dim] array")
        if self.english_clip.shape[0] < 2:
            raise HanclipError("training needs at least two English captions")
        if self.english_clip.shape[0] != self.english_text.shape[0]:
            raise HanclipError(
                f"english_clip has {self.english_clip.shape[0]} rows but english_text "
                f"{self.english_text.shape[0]}: both must hold the same captions, in order"
            )
        if self.image_bank.shape[1] != self.image_dim:
            raise HanclipError(
                f"image_bank is {self.image_bank.shape[1]}-d but english_clip "
                f"{self.image_dim}-d: both must come from the same CLIP model"
            )
        if self.korean_bank.shape[1] != self.text_dim:
            raise HanclipError(
                f"korean_bank is {self.korean_bank.shape[1]}-d but english_text "
                f"{self.text_dim}-d: both must come from the same multilingual encoder"
            )

    @property
    def image_dim(self) -> int:
        return int(self.english_clip.shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.english_text.shape[1])

    def sizes(self) -> dict[str, int]:
        return {
            "english_captions": int(self.english_clip.shape[0]),
            "images": int(self.image_bank.shape[0]),
            "korean_captions": int(self.korean_bank.shape[0]),
        }

    def fingerprint(self) -> str:
        """Shapes plus a strided sample of rows: tells banks apart cheaply, whatever N."""
        sha = hashlib.sha256()
        for array in (self.english_clip, self.english_text, self.image_bank, self.korean_bank):
            rows = np.linspace(0, array.shape[0] - 1, _FINGERPRINT_ROWS).astype(np.int64)
            sha.update(repr(array.shape).encode())
            sha.update(np.ascontiguousarray(array[np.unique(rows)], dtype=np.float32).tobytes())
        return sha.hexdigest()[:16]


@dataclass(frozen=True)
class TrainProgress:
    """Reported after each pseudo-pair bank (stage "pseudo_pairs") and each training step."""

    stage: str
    step: int
    steps: int
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None


@dataclass
class TrainResult:
    heads: HanclipHeads  # on CPU, in eval mode
    loss_history: list[float]  # mean training loss of every epoch, resumed ones included
    stage_seconds: dict[str, float]  # this run only: "pseudo_pairs", "training"
    epochs_resumed: int = 0  # epochs taken from the checkpoint rather than trained now
    device: str = "cpu"
    # The match probability fitted on the held-out captions, or why there is none.
    calibration: CalibrationReport | None = None


def precompute_pseudo_pairs(
    banks: TrainBanks,
    cfg: TrainConfig,
    progress: Callable[[TrainProgress], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo image v (e^I against the image bank) and pseudo Korean k (e^K against K)."""
    pseudo_images = soft_retrieve(
        banks.english_clip, banks.image_bank, cfg.tau_retrieval, device=cfg.device
    )
    if progress:
        progress(TrainProgress(stage="pseudo_pairs", step=1, steps=2))
    pseudo_korean = soft_retrieve(
        banks.english_text, banks.korean_bank, cfg.tau_retrieval, device=cfg.device
    )
    if progress:
        progress(TrainProgress(stage="pseudo_pairs", step=2, steps=2))
    return pseudo_images, pseudo_korean


def init_heads(image_dim: int, text_dim: int, out_dim: int, seed: int) -> HanclipHeads:
    """Heads initialised from `seed` without touching torch's global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return HanclipHeads(image_dim=image_dim, text_dim=text_dim, out_dim=out_dim)


def epoch_batches(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Row indices of each batch of one epoch, shuffled from (seed, epoch).

    A last batch of one row is dropped: BatchNorm cannot train on a single row.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_rows)
    batches = [order[start : start + batch_size] for start in range(0, n_rows, batch_size)]
    if len(batches[-1]) == 1:
        batches.pop()
    return batches


def noise_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    # The trailing 1 keeps this stream apart from the shuffle's, seeded from [seed, epoch].
    noise_seed = int(np.random.SeedSequence([seed, epoch, 1]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(noise_seed)


def training_loss(
    heads: HanclipHeads,
    english_clip: torch.Tensor,
    pseudo_image: torch.Tensor,
    english_text: torch.Tensor,
    pseudo_korean: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """L = InfoNCE(ê^I, ê^K; τ2) + InfoNCE(v̂, k̂; τ3) + λ·L_intra for one batch."""
    e_img = heads.project_image(add_noise(english_clip, cfg.noise_std, generator))
    v_img = heads.project_image(add_noise(pseudo_image, cfg.noise_std, generator))
    e_txt = heads.project_text(add_noise(english_text, cfg.noise_std, generator))
    k_txt = heads.project_text(add_noise(pseudo_korean, cfg.noise_std, generator))
    inter = info_nce(e_img, e_txt, cfg.tau_inter) + info_nce(v_img, k_txt, cfg.tau_image_text)
    return inter + cfg.intra_weight * intra_loss(e_img, v_img, e_txt, k_txt)


def _batch(
    columns: tuple[np.ndarray, ...], rows: np.ndarray, device: torch.device
) -> list[torch.Tensor]:
    # Banks stay in host memory (possibly memmapped); only the batch travels to the device.
    return [torch.from_numpy(np.asarray(c[rows], dtype=np.float32)).to(device) for c in columns]


def _columns_on_device(
    columns: tuple[np.ndarray, ...], device: torch.device
) -> tuple[torch.Tensor, ...] | None:
    """The training columns copied to a GPU with room for them; None elsewhere."""
    if not fits_on_device(sum(c.shape[0] * c.shape[1] * 4 for c in columns), device):
        return None
    return tuple(copy_to_device(c, device, _COPY_ROWS) for c in columns)


def _epoch_inputs(
    columns: tuple[np.ndarray, ...],
    on_device: tuple[torch.Tensor, ...] | None,
    batches: list[np.ndarray],
    device: torch.device,
) -> Iterator[list[torch.Tensor]]:
    """e^I, v, e^K and k of each batch of the epoch, on `device`."""
    if on_device is None:
        for rows in batches:
            yield _batch(columns, rows, device)
        return
    # The epoch's order travels once; a copy per step would wait for the GPU each time.
    order = torch.from_numpy(np.concatenate(batches)).to(device)
    start = 0
    for rows in batches:
        index = order[start : start + len(rows)]
        yield [column[index] for column in on_device]
        start += len(rows)


def _step_update(
    losses: list[torch.Tensor], step: int, steps: int, epoch: int, epochs: int
) -> TrainProgress:
    """Progress after `step` of `epoch` (both 0-based), with that step's loss."""
    return TrainProgress("training", step + 1, steps, epoch + 1, epochs, losses[step].item())


def train_heads(
    banks: TrainBanks,
    cfg: TrainConfig | None = None,
    *,
    out_dim: int | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> TrainResult:
    """Train f1 and f2 on the banks; resumes from `checkpoint_dir` when it holds this run.

    Interrupting (KeyboardInterrupt) loses at most the epoch in progress: the checkpoint of
    the last finished epoch is written atomically and a rerun with the same banks and
    configuration continues from it.
    """
    cfg = cfg or TrainConfig()
    n_captions = banks.english_clip.shape[0]
    out_dim = out_dim or banks.image_dim
    device = torch.device(pick_device(cfg.device))
    # Batches index these rows; the held-out ones are for the calibration only.
    held_out = held_out_rows(n_captions, cfg.seed)
    training_rows = np.setdiff1d(np.arange(n_captions), held_out)
    n_training = len(training_rows)
    run = {
        "config": cfg.hyperparameters(),
        "out_dim": out_dim,
        "banks": banks.fingerprint(),
        "held_out_rows": len(held_out),
    }
    batch_size = min(cfg.batch_size, n_training)
    steps_per_epoch = len(epoch_batches(n_training, batch_size, cfg.seed, 0))
    checkpoint_path: Path | None = None
    resume_from: _Checkpoint | None = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_NAME
        if checkpoint_path.is_file():
            # Read before the pseudo-pair stage, so a mismatching checkpoint fails fast.
            resume_from = _read_checkpoint(checkpoint_path, run)

    started = time.perf_counter()
    pseudo_images, pseudo_korean = _pseudo_pairs(banks, cfg, checkpoint_dir, progress)
    stage_seconds = {"pseudo_pairs": time.perf_counter() - started}

    heads = init_heads(banks.image_dim, banks.text_dim, out_dim, cfg.seed).to(device)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = CosineAnnealingLR(optimizer, T_max=cfg.epochs * steps_per_epoch)
    loss_history: list[float] = []
    if resume_from is not None:
        loss_history = _restore(resume_from, heads, optimizer, scheduler)
    epochs_resumed = len(loss_history)

    started = time.perf_counter()
    columns = (banks.english_clip, pseudo_images, banks.english_text, pseudo_korean)
    on_device = _columns_on_device(columns, device)
    for epoch in range(epochs_resumed, cfg.epochs):
        heads.train()
        generator = noise_generator(cfg.seed, epoch, device)
        batches = [training_rows[b] for b in epoch_batches(n_training, batch_size, cfg.seed, epoch)]
        step_losses: list[torch.Tensor] = []
        for step, inputs in enumerate(_epoch_inputs(columns, on_device, batches, device)):
            loss = training_loss(heads, *inputs, cfg, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step_losses.append(loss.detach())
            if progress and step > 0:
                progress(_step_update(step_losses, step - 1, len(batches), epoch, cfg.epochs))
        if progress:
            progress(_step_update(step_losses, len(batches) - 1, len(batches), epoch, cfg.epochs))
        # One read per epoch; summed in Python's double, in step order.
        epoch_loss = sum(torch.stack(step_losses).tolist())
        loss_history.append(epoch_loss / len(batches))
        if not math.isfinite(loss_history[-1]):
            raise HanclipError(
                f"training diverged in epoch {epoch + 1} (loss {loss_history[-1]}); "
                "try a lower learning rate or higher temperatures"
            )
        if checkpoint_path is not None:
            _save_checkpoint(checkpoint_path, run, heads, optimizer, scheduler, loss_history)
    stage_seconds["training"] = time.perf_counter() - started

    heads = heads.cpu().eval()
    if len(held_out) == 0:
        calibration = not_calibrated(n_captions)
    else:
        image_side, text_side = _held_out_vectors(
            heads, pseudo_images, pseudo_korean, held_out, cfg
        )
        calibration = calibrate(image_side, text_side, seed=cfg.seed, noise_std=cfg.noise_std)

    return TrainResult(
        heads=heads,
        loss_history=loss_history,
        stage_seconds=stage_seconds,
        epochs_resumed=epochs_resumed,
        device=str(device),
        calibration=calibration,
    )


def _held_out_vectors(
    heads: HanclipHeads,
    pseudo_images: np.ndarray,
    pseudo_korean: np.ndarray,
    rows: np.ndarray,
    cfg: TrainConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """f1(v) and f2(k) of the held-out rows, with the training noise σ (trainer.calibration
    says why), drawn from a stream of the calibration's own."""
    noise_seed = int(stream(cfg.seed, NOISE_STREAM).generate_state(1)[0])
    generator = torch.Generator().manual_seed(noise_seed)
    with torch.no_grad():
        images = torch.from_numpy(np.asarray(pseudo_images[rows], dtype=np.float32))
        korean = torch.from_numpy(np.asarray(pseudo_korean[rows], dtype=np.float32))
        image_side = heads.project_image(add_noise(images, cfg.noise_std, generator))
        text_side = heads.project_text(add_noise(korean, cfg.noise_std, generator))
    return image_side.numpy(), text_side.numpy()


def _pseudo_pairs(
    banks: TrainBanks,
    cfg: TrainConfig,
    checkpoint_dir: Path | None,
    progress: Callable[[TrainProgress], None] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """precompute_pseudo_pairs, cached in the checkpoint directory: a resumed run skips it."""
    if checkpoint_dir is None:
        return precompute_pseudo_pairs(banks, cfg, progress)
    path = Path(checkpoint_dir) / PSEUDO_PAIRS_NAME
    fingerprint = f"{banks.fingerprint()}:{cfg.tau_retrieval!r}"
    if path.is_file():
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["fingerprint"]) == fingerprint:
                return cached["pseudo_images"], cached["pseudo_korean"]
    pseudo_images, pseudo_korean = precompute_pseudo_pairs(banks, cfg, progress)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            pseudo_images=pseudo_images,
            pseudo_korean=pseudo_korean,
            fingerprint=np.array(fingerprint),
        )
    return pseudo_images, pseudo_korean


def _save_checkpoint(
    path: Path,
    run: dict[str, Any],
    heads: HanclipHeads,
    optimizer: torch.optim.Optimizer,
    scheduler: CosineAnnealingLR,
    loss_history: list[float],
) -> None:
    """Tensors in safetensors, everything else as JSON in its header; written atomically."""
    from safetensors.torch import save_file

    tensors = {f"heads.{k}": v for k, v in heads.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for param_id, param_state in optimizer_state["state"].items():
        for key, value in param_state.items():
            tensors[f"optimizer.{param_id}.{key}"] = value
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {
        "run": run,
        "loss_history": loss_history,
        "param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict(),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_CHECKPOINT_KEY: json.dumps(meta)})


@dataclass(frozen=True)
class _Checkpoint:
    meta: dict[str, Any]  # run, loss_history, optimizer param_groups, scheduler state
    tensors: dict[str, torch.Tensor]  # "heads.*" and "optimizer.{param_id}.{key}"


def _read_checkpoint(path: Path, run: dict[str, Any]) -> _Checkpoint:
    """Read a checkpoint and check that it belongs to this run (config, out_dim, banks)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_CHECKPOINT_KEY])
            names = list(f.keys())  # safe_open is not iterable
            tensors = {name: f.get_tensor(name) for name in names}
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise HanclipError(f"cannot read training checkpoint {path}: {exc}") from None
    if meta["run"] != run:
        differing = sorted(key for key in run if meta["run"].get(key) != run[key])
        raise HanclipError(
            f"checkpoint {path} belongs to another run (its {', '.join(differing)} differ); "
            "delete it or use another checkpoint directory"
        )
    return _Checkpoint(meta=meta, tensors=tensors)


def _restore(
    checkpoint: _Checkpoint,
    heads: HanclipHeads,
    optimizer: torch.optim.Optimizer,
    scheduler: CosineAnnealingLR,
) -> list[float]:
    """Restore heads, optimizer and schedule; returns the loss history of finished epochs."""
    tensors = checkpoint.tensors
    heads.load_state_dict(
        {k.removeprefix("heads."): v for k, v in tensors.items() if k.startswith("heads.")}
    )
    optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            optimizer_state.setdefault(int(param_id), {})[name] = value
    param_groups = checkpoint.meta["param_groups"]
    optimizer.load_state_dict({"state": optimizer_state, "param_groups": param_groups})
    scheduler.load_state_dict(checkpoint.meta["scheduler"])
    return [float(loss) for loss in checkpoint.meta["loss_history"]]


def write_trained_bundle(
    result: TrainResult,
    out_dir: str | Path,
    *,
    name: str,
    image_model: str,
    text_model: str,
    cfg: TrainConfig,
    banks_info: dict[str, Any],
) -> Path:
    """Save `heads.safetensors` and `hanclip.json` (with dims, training metadata and the
    `calibration` block: a and b, or why there are none)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / HEADS_NAME) as tmp:
        result.heads.save(tmp)
    losses = result.loss_history
    training = {
        "hyperparameters": cfg.hyperparameters(),
        "banks": banks_info,
        "seed": cfg.seed,
        "epochs_trained": len(losses),
        "loss": {
            "first": losses[0] if losses else None,
            "last": losses[-1] if losses else None,
            "min": min(losses) if losses else None,
        },
        "seconds": {stage: round(s, 3) for stage, s in result.stage_seconds.items()},
        "device": result.device,
    }
    report = result.calibration
    calibration = {} if report is None else {"calibration": report.as_json()}
    dims = {
        "image": int(result.heads.f1[0].in_features),
        "text": int(result.heads.f2[0].in_features),
        "output": int(result.heads.f1[3].out_features),
    }
    return write_bundle(
        out_dir,
        name=name,
        image_model=image_model,
        text_model=text_model,
        heads=HEADS_NAME,
        extra={
            "dims": dims,
            "training": training,
            **calibration,
            # The target captions' language (`--language`), where the banks say it.
            **({"language": banks_info["language"]} if banks_info.get("language") else {}),
        },
    )
