"""`converter train`: the paper's recipe (Adam, weight decay, lr / 10 on a validation plateau),
with a frozen-encoder mode, multimodal distillation and DistributedDataParallel (torchrun).

A run directory holds: options.json, metrics.jsonl (one line per epoch), curves.png,
best.safetensors and last.safetensors (our format), and state.pt (optimiser, scheduler and
epoch, for --resume).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from converter.checkpoints import load_backbone_weights, load_checkpoint, read_config, save_checkpoint
from converter.config import ConfigError, VTNConfig
from converter.data.clips import ClipDataset, ReversedSome, read_reversal_pairs, reverse_some, usable_items
from converter.data.stream_windows import StreamWindows, label_windows
from converter.embedding_cache import FeatureCache, FeatureWindows, ir_trunk, within_video_subspace
from converter.models.decoder import SelfAttentionDecoder
from converter.models.vtn import VTN, FeatureHead, build_vtn
from converter.options import TrainError, TrainOptions
from converter.progress import progress
from vtn_edge.datasets import VideoItem, open_dataset
from vtn_edge.metadata import Preprocessing
from vtn_edge.online import ANNOTATIONS, AnnotatedStream, is_stream_folder, load_streams, stream_labels

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ distributed helpers
def _dist_setup() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ------------------------------------------------------------------ model
def build_model(opts: TrainOptions, labels: tuple[str, ...]) -> VTN:
    pre = Preprocessing(input_size=opts.input_size, resize_short=opts.input_size)
    if opts.backbone_weights and Path(opts.backbone_weights).suffix == ".tflite":
        from converter.tflite_weights import TFLITE_MEAN, TFLITE_STD

        pre = replace(pre, mean=TFLITE_MEAN, std=TFLITE_STD)
    if opts.init_checkpoint:
        # the classifier carries over when the classes are the same (fine-tuning), else it starts afresh
        same = read_config(opts.init_checkpoint).labels == tuple(labels)
        model = load_checkpoint(opts.init_checkpoint, labels=labels, reinit_head=not same)
        config = replace(
            model.config,
            window=opts.window,
            stride=opts.stride,
            preprocessing=replace(model.config.preprocessing, input_size=opts.input_size, resize_short=opts.input_size),
            centre_window=opts.centre_window or model.config.centre_window,
        )
        model.config = config
        for module in model.modules():
            if isinstance(module, SelfAttentionDecoder):
                module.centre = config.centre_window
        return model
    config = VTNConfig(
        arch=opts.arch,
        modality=opts.modality,
        num_classes=len(labels),
        labels=labels,
        window=opts.window,
        stride=opts.stride,
        preprocessing=pre,
        centre_window=opts.centre_window,
    )
    model = build_vtn(config)
    if isinstance(model, VTN) and opts.backbone_weights:
        path = Path(opts.backbone_weights)
        if path.suffix == ".tflite":
            if opts.arch != "mobilenetv2":
                raise TrainError(f"{path} is a MobileNetV2; it cannot initialise a {opts.arch} encoder")
            from converter.tflite_weights import read_tflite_mobilenetv2

            model.encoder.backbone.load_state_dict(read_tflite_mobilenetv2(path).backbone)
        else:
            load_backbone_weights(model, path)
    elif opts.backbone_weights:
        raise TrainError("--backbone-weights initialises one encoder; train the two streams separately")
    return model


def _load_teachers(opts: TrainOptions, device: torch.device) -> list[torch.nn.Module]:
    teachers = []
    for path in opts.teachers:
        teacher = load_checkpoint(path).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        teachers.append(teacher)
    return teachers


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, *, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al.: (1 - alpha) CE on labels + alpha T^2 KL on softened teacher targets."""
    soft = (
        F.kl_div(
            F.log_softmax(student / temperature, dim=1), F.softmax(teacher / temperature, dim=1), reduction="batchmean"
        )
        * temperature**2
    )
    return (1 - alpha) * F.cross_entropy(student, labels) + alpha * soft


def add_feature_noise(features: torch.Tensor, scale: float) -> torch.Tensor:
    """Features [B, T, ...] plus Gaussian noise of `scale` times each frame's RMS: a decoder trained so
    keeps its decisions when an INT8 encoder moves the features it was trained on."""
    rms = features.flatten(2).pow(2).mean(dim=-1).sqrt().view(*features.shape[:2], *[1] * (features.dim() - 2))
    return features + scale * rms * torch.randn_like(features)


# ------------------------------------------------------------------ annotated streams
@dataclass(frozen=True)
class _Streams:
    """Training on annotated streams (`dataset synth --streams`): windows labelled by the rule in
    `converter.data.stream_windows`, the annotation's background class for idle time."""

    labels: tuple[str, ...]
    background: str
    train: list[AnnotatedStream]
    val: list[AnnotatedStream]
    mix: list[tuple[VideoItem, int]]  # trimmed clips trained beside the stream windows (--mix-clips)

    @staticmethod
    def items(streams: list[AnnotatedStream]) -> list[tuple[VideoItem, int]]:
        return [(VideoItem(s.path, 0), s.frames) for s in streams]

    def windows(
        self, train_features, val_features, mix_features, opts: TrainOptions, shape: dict, partner: torch.Tensor | None
    ) -> tuple[StreamWindows, Dataset, Dataset]:
        """(the stream windows of an epoch, everything an epoch trains on, validation windows);
        `partner` (--reverse-pairs) reverses some of the trimmed clips, never a stream window."""
        background = self.labels.index(self.background)
        cut = dict(window=opts.window, stride=opts.stride, after_action=opts.after_action)
        train = label_windows(self.train, self.labels, self.background, step=1, **cut)
        val = label_windows(self.val, self.labels, self.background, step=4, **cut) if self.val else []
        log.info("stream windows: %d for training, %d for validation", len(train), len(val))
        hard = sum(w.nuisance for w in train)
        log.info("idle windows showing a nuisance: %d, drawn %g times as often", hard, opts.nuisance_weight)
        windows = StreamWindows(train_features, train, background, train=True, per_epoch=STREAM_WINDOWS_PER_EPOCH,
                                nuisance_weight=opts.nuisance_weight, seed=opts.seed, **shape)  # fmt: skip
        epoch: Dataset = windows
        if self.mix:
            clips: Dataset = FeatureWindows(mix_features, [i.label for i, _ in self.mix], train=True, **shape)
            if partner is not None:
                clips = ReversedSome(clips, partner)
            share = opts.mix_share
            repeats = max(1, round(STREAM_WINDOWS_PER_EPOCH * share / (1 - share) / len(clips)))
            epoch = ConcatDataset([windows] + [clips] * repeats)
            log.info("trimmed clips: %d, each seen %d times an epoch", len(clips), repeats)
        return windows, epoch, StreamWindows(val_features, val, background, train=False, **shape)


STREAM_WINDOWS_PER_EPOCH = 12000


def _open_streams(opts: TrainOptions) -> _Streams:
    if not opts.freeze_encoder:
        raise TrainError("training on annotated streams works on cached features: add --freeze-encoder")
    if opts.teachers or opts.tune_layers:
        raise TrainError("--teacher and --tune-layers work on trimmed clips, not on streams")
    if opts.reverse_pairs and not opts.mix_clips:
        raise TrainError("--reverse-pairs on streams reverses the --mix-clips clips only: add --mix-clips")
    labels, background = stream_labels(opts.data)
    if opts.validation and not is_stream_folder(opts.validation):
        raise TrainError(f"--data {opts.data} holds streams, so --validation must too (a folder with {ANNOTATIONS})")
    val = load_streams(opts.validation, labels) if opts.validation else []
    train = load_streams(opts.data, labels)
    if opts.nuisance_weight != 1 and not any(s.nuisances for s in train):
        raise TrainError(
            f"--nuisance-weight: the streams in {opts.data} name no nuisances in their annotation "
            "(render them again with `converter dataset synth --streams`)"
        )
    return _Streams(labels, background, train, val, _mix_items(opts, labels))


def _mix_items(opts: TrainOptions, labels: tuple[str, ...]) -> list[tuple[VideoItem, int]]:
    """The --mix-clips dataset's videos, their labels renumbered to the streams' classes."""
    if not opts.mix_clips:
        return []
    dataset = open_dataset(opts.mix_clips, labels_file=opts.labels, subset="training")
    unknown = sorted(set(dataset.labels) - set(labels))
    if unknown:
        raise TrainError(f"--mix-clips {opts.mix_clips} has classes the streams lack: {', '.join(unknown)}")
    index = [labels.index(name) for name in dataset.labels]
    items = usable_items(dataset, window=opts.window, stride=opts.stride)
    return [(replace(item, label=index[item.label]), frames) for item, frames in items]


# ------------------------------------------------------------------ the run
@dataclass
class _RunState:
    epoch: int = 0
    best_acc: float = -1.0
    history: list = field(default_factory=list)


@dataclass
class _Data:
    """What an epoch trains and validates on, and the module whose weights train."""

    train: Dataset
    val: Dataset
    trainable: torch.nn.Module
    workers: int
    clips: ClipDataset  # the trimmed training clips (their augmentation follows the epoch)
    stream_windows: StreamWindows | None = None


@dataclass
class _Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    per_batch: bool  # onecycle steps every batch; plateau once an epoch, on the validation loss


def train(opts: TrainOptions, *, resume: bool = False) -> Path:
    rank, _world, device = _dist_setup()
    out = Path(opts.out)
    torch.manual_seed(opts.seed + rank)
    np.random.seed(opts.seed + rank)
    if opts.mix_clips and not is_stream_folder(opts.data):
        raise TrainError("--mix-clips adds trimmed clips to training on streams: --data must be a stream folder")
    streams = _open_streams(opts) if is_stream_folder(opts.data) else None
    labels, train_items, val_items = _items(opts, streams)
    model = build_model(opts, labels).to(device)
    partner = read_reversal_pairs(opts.reverse_pairs, labels).to(device) if opts.reverse_pairs else None
    data = _training_data(opts, model, streams, train_items, val_items, rank, device, partner)
    batch_partner = partner if streams is None else None  # on streams the dataset reverses its clips only
    net = torch.nn.parallel.DistributedDataParallel(data.trainable) if dist.is_initialized() else data.trainable
    sampler = DistributedSampler(data.train, seed=opts.seed) if dist.is_initialized() else None
    loader = DataLoader(
        data.train, batch_size=opts.batch_size, shuffle=sampler is None, sampler=sampler, num_workers=data.workers,
        persistent_workers=data.workers > 0, drop_last=len(data.train) > opts.batch_size,
    )  # fmt: skip
    val_loader = DataLoader(data.val, batch_size=opts.batch_size, num_workers=data.workers) if len(data.val) else None
    optimisation = _optimisation(opts, data.trainable, len(loader))
    teachers = _load_teachers(opts, device)
    state = _start(opts, out, model, data.trainable, optimisation, device, rank, resume)
    for epoch in range(state.epoch + 1, opts.epochs + 1):
        for follows_epoch in (sampler, data.clips, data.stream_windows):
            if follows_epoch is not None:
                follows_epoch.set_epoch(epoch)
        started = time.perf_counter()
        per_batch = optimisation.scheduler if optimisation.per_batch else None
        loss, acc = _run_epoch(net, loader, optimisation.optimizer, per_batch, device, teachers, opts, epoch, rank,
                               batch_partner)  # fmt: skip
        val_loss, val_acc = _validate(data.trainable, val_loader, device, opts.bf16) if val_loader else (loss, acc)
        if not optimisation.per_batch:
            optimisation.scheduler.step(val_loss)
        state.epoch = epoch
        record = {
            "epoch": epoch, "loss": loss, "acc": acc, "val_loss": val_loss, "val_acc": val_acc,
            "lr": optimisation.optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 1),
        }  # fmt: skip
        state.history.append(record)
        if rank == 0:
            _save_epoch(out, record, state, model, data.trainable, optimisation)
    if dist.is_initialized():
        dist.barrier()
    return out


def _items(opts: TrainOptions, streams: _Streams | None) -> tuple[tuple[str, ...], list, list]:
    """(labels, training items, validation items) of the trimmed clips or the streams."""
    if streams is not None:
        return streams.labels, streams.items(streams.train), streams.items(streams.val)
    train_set = open_dataset(opts.data, labels_file=opts.labels, subset="training")
    val_set = None
    if opts.validation:
        val_set = open_dataset(opts.validation, labels_file=opts.labels, subset="validation")
    labels = train_set.labels
    if val_set is not None and val_set.labels != labels:
        raise TrainError(f"--validation has classes {val_set.labels[:5]}... but --data has {labels[:5]}...")
    train_items = usable_items(train_set, window=opts.window, stride=opts.stride)
    val_items = usable_items(val_set, window=opts.window, stride=opts.stride) if val_set else []
    return labels, train_items, val_items


def _training_data(
    opts: TrainOptions,
    model: VTN,
    streams: _Streams | None,
    train_items: list,
    val_items: list,
    rank: int,
    device: torch.device,
    partner: torch.Tensor | None,
) -> _Data:
    """Whole clips through the whole model, or (--freeze-encoder) cached features through a head."""
    pre = model.config.preprocessing
    clip = dict(window=opts.window, stride=opts.stride)
    train_clips = ClipDataset(train_items, pre, **clip, train=True, flip=opts.flip, seed=opts.seed)
    val_clips = ClipDataset(val_items, pre, **clip, train=False)
    if not opts.freeze_encoder:
        return _Data(train_clips, val_clips, model, opts.workers, train_clips)
    if opts.tune_layers and not isinstance(model, VTN):
        raise TrainError("--tune-layers needs one encoder; train the two streams separately")
    try:
        trunk = model.encoder.split_backbone(opts.tune_layers)[0]
    except ConfigError as exc:
        raise TrainError(f"--tune-layers: {exc}") from None
    ir = ir_trunk(Path(opts.features_from), model) if opts.features_from else None
    cache = FeatureCache(Path(opts.cache_dir or Path(opts.out) / "features"), model, views=opts.views,
                         flip=opts.flip, stride=opts.stride, tuned=opts.tune_layers, ir=ir)  # fmt: skip
    if rank != 0 and dist.is_initialized():
        dist.barrier()  # rank 0 computes what is missing; the others then read it from the cache
    train_features = cache.features(train_clips, "train")
    val_features = cache.features(val_clips, "val") if val_items else []
    if rank == 0 and dist.is_initialized():
        dist.barrier()
    windows = dict(**clip, difference=model.config.uses_difference)
    stream_windows = None
    if streams is not None:
        mix_features = cache.features(ClipDataset(streams.mix, pre, **clip, train=False), "mix") if streams.mix else []
        stream_windows, train_data, val_data = streams.windows(train_features, val_features, mix_features, opts,
                                                               windows, partner)  # fmt: skip
    else:
        train_data = FeatureWindows(train_features, [i.label for i, _ in train_items], train=True, **windows)
        val_data = FeatureWindows(val_features, [i.label for i, _ in val_items], train=False, **windows)
    for p in trunk.parameters():
        p.requires_grad_(False)
    subspace = None
    if opts.subspace is not None:
        try:
            subspace = within_video_subspace(train_features, opts.subspace)
        except ValueError as exc:
            raise TrainError(f"--subspace: {exc}") from None
    head = model.feature_head(subspace, tuned=opts.tune_layers).to(device)
    return _Data(train_data, val_data, head, 0, train_clips, stream_windows)


def _optimisation(opts: TrainOptions, trainable: torch.nn.Module, batches: int) -> _Optimisation:
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=opts.lr, betas=(0.9, 0.999), weight_decay=opts.weight_decay)
    if opts.schedule != "onecycle":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=opts.patience)
        return _Optimisation(optimizer, plateau, per_batch=False)
    steps = batches if opts.max_steps is None else min(batches, opts.max_steps)
    total = max(4, opts.epochs * steps)  # OneCycleLR needs >= 2 steps in each phase
    onecycle = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=opts.lr, total_steps=total, pct_start=max(0.05, 2 / total)
    )
    return _Optimisation(optimizer, onecycle, per_batch=True)


def _start(
    opts: TrainOptions,
    out: Path,
    model: VTN,
    trainable: torch.nn.Module,
    optimisation: _Optimisation,
    device: torch.device,
    rank: int,
    resume: bool,
) -> _RunState:
    """A new run directory, or (--resume) the state its last epoch saved."""
    if not resume:
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "options.json").write_text(json.dumps(asdict(opts), indent=2))
        return _RunState()
    saved = torch.load(out / "state.pt", map_location=device, weights_only=True)
    model.load_state_dict(saved["model"])
    if "head" in saved:
        trainable.load_state_dict(saved["head"])
    optimisation.optimizer.load_state_dict(saved["optimizer"])
    optimisation.scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    if rank == 0:
        log.info("resuming %s after epoch %d", out, int(saved["epoch"]))
    return _RunState(epoch=int(saved["epoch"]), best_acc=float(saved["best_acc"]), history=json.loads(saved["history"]))


def _save_epoch(
    out: Path, record: dict, state: _RunState, model: VTN, trainable: torch.nn.Module, optimisation: _Optimisation
) -> None:
    """The epoch's line, checkpoints (last, and best by validation accuracy) and resumable state."""
    log.info(
        "epoch %d: loss %.4f acc %.3f | val loss %.4f acc %.3f | lr %.1e | %s s",
        record["epoch"], record["loss"], record["acc"], record["val_loss"], record["val_acc"], record["lr"],
        record["seconds"],
    )  # fmt: skip
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if isinstance(trainable, FeatureHead):
        trainable.fold()
    save_checkpoint(model, out / "last.safetensors")
    if record["val_acc"] > state.best_acc:
        state.best_acc = record["val_acc"]
        save_checkpoint(model, out / "best.safetensors")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimisation.optimizer.state_dict(),
            "scheduler": optimisation.scheduler.state_dict(),
            "epoch": record["epoch"],
            "best_acc": state.best_acc,
            "history": json.dumps(state.history),
            "rng": torch.get_rng_state(),
            **({"head": trainable.state_dict()} if trainable is not model else {}),
        },
        out / "state.pt.partial",
    )
    os.replace(out / "state.pt.partial", out / "state.pt")
    plot_curves(state.history, out / "curves.png")


def _run_epoch(
    net,
    loader,
    optimizer,
    batch_scheduler,
    device,
    teachers,
    opts: TrainOptions,
    epoch: int,
    rank: int,
    partner: torch.Tensor | None,
) -> tuple[float, float]:
    net.train()
    total, correct, loss_sum = 0, 0, 0.0
    bar = progress(loader, desc=f"epoch {epoch}/{opts.epochs}", unit="batch", enabled=rank == 0, leave=False)
    for step, (x, y) in enumerate(bar):
        if opts.max_steps is not None and step >= opts.max_steps:
            break
        x, y = x.to(device), y.to(device)
        if partner is not None:
            x, y = reverse_some(x, y, partner)
        if opts.feature_noise:
            x = add_feature_noise(x, opts.feature_noise)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
            logits = net(x).float()
            if teachers:
                with torch.no_grad():
                    target = torch.stack([t(x) for t in teachers]).mean(0).float()
        if teachers:
            loss = distillation_loss(logits, target, y, temperature=opts.kd_temperature, alpha=opts.kd_alpha)
        else:
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if opts.clip_grad:
            torch.nn.utils.clip_grad_norm_(net.parameters(), opts.clip_grad)
        optimizer.step()
        if batch_scheduler is not None and batch_scheduler.last_epoch < batch_scheduler.total_steps:
            batch_scheduler.step()
        total += len(y)
        correct += int((logits.argmax(1) == y).sum())
        loss_sum += loss.item() * len(y)
        bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")
    loss_sum, correct, total = _all_sum([loss_sum, correct, total], device)
    return loss_sum / max(total, 1), correct / max(total, 1)


@torch.no_grad()
def _validate(net, loader, device, bf16: bool = False) -> tuple[float, float]:
    net.eval()
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = net(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    return loss_sum / max(total, 1), correct / max(total, 1)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="val")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend()
    ax2.plot(epochs, [h["acc"] for h in history], label="train")
    ax2.plot(epochs, [h["val_acc"] for h in history], label="val")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("clip accuracy"), ax2.set_ylim(0, 1), ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
