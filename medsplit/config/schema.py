"""The config schema: one dataclass per section (``data``, ``model``, ``split``, ``train``,
``output``) whose fields are the settable keys, with their defaults and documentation; the
choices of the keys that take one of a list; and :class:`ConfigError`. Torch-free, like the
whole :mod:`medsplit.config` package: loading a config must not import torch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medsplit.protocol_names import BUILTIN, protocol_facts, protocol_names


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key."""


def default_data_root() -> Path:
    """The data root when none is given: ``$MEDSPLIT_DATA``, else ``datasets/`` (training and attacks alike)."""
    return Path(os.environ.get("MEDSPLIT_DATA", "datasets"))


@dataclass
class DataConfig:
    source: str = "auto"
    """eyepacs | kaggle | retinamnist | synthetic | auto (first present, else synthetic) | a path.
    For lungs: auto | synthetic | a set name under $MEDSPLIT_DATA/lungs | a path."""
    root: str = ""
    """Data root; empty means $MEDSPLIT_DATA, else ``datasets/``."""
    target: str = "referable"
    """Retinopathy target: any (grade > 0) | referable (grade >= 2) | grade (5 classes)."""
    img_size: int = 128
    """Side in pixels the images are resized to (square) before training."""
    val_fraction: float = 0.15
    """Share of patients in the validation split (sets with official splits, RetinaMNIST, keep theirs)."""
    test_fraction: float = 0.2
    """Share of patients in the test split, scored once by the model selected on validation."""
    max_images: int | None = None
    """Train on a seeded, patient-level subset of at most this many images; null uses every image."""
    synthetic_size: int = 600
    """Images the synthetic generator makes when the data is synthetic."""
    partition: str = "iid"
    """iid | dirichlet | label_skew | group (clients = image source/view)."""
    alpha: float = 0.5
    """Dirichlet concentration of partition=dirichlet: smaller gives hospitals more skewed labels."""
    augment: bool = True
    """Augment training images (each hospital from its own seeded generator); validation and test never are."""
    preprocess: str = "none"
    """Fundus photographs only: none | local-contrast (subtract each pixel's local average colour,
    Graham 2015: lesions and vessels stay, the camera's illumination and colour cast go)."""
    rotation: str = "any"
    """Fundus augmentation's geometry: any (an angle in [-180, 180] degrees and a 0.9-1.1 zoom,
    bilinear resampling) | right-angles (the square's 8 rotations and flips by indexing: nothing
    resampled, so one-pixel lesions stay sharp)."""
    aug_backend: str = "monai"
    """Segmentation augmentation: monai | albumentations."""
    cache_dir: str = ".cache/medsplit"
    """Folder for decoded images (uint8 tensors, never pickle), keyed by file list, size and modification times."""
    duplicates: str = "error"
    """Images of identical content (by hash) in a folder source: error (stop, naming both files) |
    drop (keep the first copy; the dropped ones are listed in the run's data summary)."""


@dataclass
class ModelConfig:
    name: str = "resnet34"
    """resnet18 | resnet34 | resnet50 | unet-smp | unet-classic."""
    weights: str | None = None
    """Path to locally cached weights; nothing is ever downloaded."""
    base_channels: int = 64
    """Classic U-Net width (64 in the original study)."""


@dataclass
class SplitConfig:
    protocol: str = "sequential"
    """sequential (relay, as in the original study) | splitfed (SFL-V2: one shared server model) |
    splitfed-v1 (SFL-V1: one server copy per hospital, averaged each round) | centralised | fedavg."""
    cut: int = 3
    """Where the network is cut: N layers stay with the hospital (the client), the server holds the rest.
    ResNet (retinopathy): the client runs torchvision's children()[0..N] (0 conv1, 1 bn1, 2 relu,
    3 maxpool, 4-7 layer1-layer4), legal 0-7; at 224 px N=2 sends 64x112x112, N=3 64x56x56, N=5
    128x28x28, N=7 512x7x7. U-Net (lungs, cut U-shaped): the client runs the first N encoder blocks
    and the last N decoder blocks with the head (so the masks never leave it), legal 1-3; at 256 px
    with unet-smp N=1 sends 64x128x128 and gets 64x64x64 back. Ignored by centralised and fedavg."""
    clients: int = 2
    """Number of hospitals; each holds its own part of the training images (data.partition)."""
    serialise: bool = False
    """Encode/decode every message on the in-process channel (what a real transport does)."""
    compress_activations: str = "none"
    """Lossy codec for activations crossing a cut: none | fp16 | bf16 | int8 | topk0.1 | topk0.01."""
    compress_gradients: str = "none"
    """Lossy codec for gradients returned across a cut (same choices)."""
    optimizer_handover: str = "carry"
    """What happens to a hospital's optimiser state (Adam moments) when it takes in client weights:
    carry (the state travels with the weights: the relay hands it to the next hospital, the averaging
    protocols average it like the weights; counted as weights bytes) | reset (fresh state on every
    handover) | local (each hospital keeps its own moments; they then belong to
    weights it no longer holds)."""
    microbatches: int = 1
    """Micro-batches per training step, pipelined across the cut: the hospital computes and sends
    micro-batch k+1 while the link carries k and the server computes k-1 (and the same backward);
    gradients accumulate, weighted by rows, and every party steps once per batch. 1: the whole batch
    at once. The gradient equals the whole batch's except that BatchNorm uses each micro-batch's own
    statistics (and updates its running statistics once per micro-batch). At most
    train.batch_size / 2 (two images each); a smaller last batch uses fewer."""
    min_hospitals: int | None = None
    """The fewest hospitals a run goes on with (splitfed, splitfed-v1, fedavg, sequential; in one
    process or over gloo; splitfed and sequential over flare). A hospital that stops answering (or leaves by split.dropout) is dropped:
    the averaging protocols average over the hospitals present that round, the relay skips it and
    hands the weights on; each dropout is in metrics.json, the console and the report. The hospital that evaluates and
    keeps the history (client0; the relay's last hospital) cannot be dropped. null: all of them
    (any hospital lost ends the run, which resumes from its checkpoints)."""
    dropout: str = ""
    """In-process dropout schedule, to measure what losing a site costs:
    client1:epoch=2:after=3 (hospital 1 leaves epoch 2, counted from 1, after 3 of its batches),
    :rejoin=4 brings it back at the start of epoch 4 with the current weights; entries separated by
    commas. Needs split.min_hospitals low enough. Over party processes hospitals leave by failing."""
    transport: str = "inprocess"
    """inprocess (every party in this process) | gloo (each hospital and the server in its own
    process, torch.distributed over TCP; sequential and splitfed only). See docs/parties.md.
    | flare (server and hospitals as NVIDIA FLARE sites in FLARE's simulator; needs the flare extra;
    see docs/flare.md)."""
    address: str = "127.0.0.1:0"
    """HOST:PORT of the server's rendezvous for transport=gloo; port 0 picks a free one (local runs)."""
    timeout_s: float = 120.0
    """How long a party waits for another before naming it as not answering (transport=gloo)."""
    secret_file: str | None = None
    """transport=gloo: a file holding a shared secret (at least 16 bytes; every party its own copy,
    wherever it keeps it). Every party must prove it at start-up and every message carries an
    HMAC-SHA256 under a key derived from it per run: a process without it, or a replayed message,
    is refused and named. Authenticates only: use FLARE or a VPN to keep the bytes private."""


@dataclass
class TrainConfig:
    epochs: int = 6
    """Training epochs (each hospital's rows once per epoch)."""
    batch_size: int = 32
    """Training batch size per hospital step."""
    lr: float = 1e-3
    """Learning rate of every party's optimiser (the start of the schedule)."""
    schedule: str = "constant"
    """constant | cosine: the learning rate of epoch e (from 0) is lr * (1 + cos(pi * e / epochs)) / 2,
    set on every party's optimiser as the epoch starts (no state, so a resumed run gets the same)."""
    sampling: str = "shuffle"
    """shuffle (every training image once per epoch) | class-balanced (classification only: each
    hospital draws as many rows as it holds, with replacement, each class of its own labels equally
    often; a model cannot then score well by predicting the majority class)."""
    label_smoothing: float = 0.0
    """Classification only: cross-entropy against (1 - s) * one-hot + s / classes (Szegedy et al. 2016),
    so the model is not pushed towards ever more confident logits; 0 is plain cross-entropy."""
    optimizer: str = "adam"
    """adam | adamw | sgd, the same for every party."""
    weight_decay: float = 1e-4
    """Weight decay of every party's optimiser."""
    seed: int = 0
    """Seeds the model init, the splits, the partition, the batches and the augmentation."""
    device: str = "auto"
    """auto (cuda when present) | cpu | cuda | cuda:N."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU: see cpu_amp)."""
    cpu_amp: bool = False
    """bf16 autocast on CPU. About 2x faster for a ResNet-34 at 128 px on a CPU with AVX512-BF16 or
    AMX (benchmarks/cpu_bf16.py), slower where bf16 is emulated; it changes the numerics, so it is off
    by default and a run's config records it."""
    channels_last: bool = True
    """channels_last memory format on CUDA (ignored on CPU)."""
    select_on: str = "auto"
    """Validation metric for picking the checkpoint that is tested: auto (auc / dice) or a metric name."""
    eval_batch_size: int = 128
    """Batch size of validation and test passes (no effect on the numbers)."""
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""


@dataclass
class OutputConfig:
    name: str = ""
    """Run name; empty derives one from task, protocol, cut and clients."""
    runs_dir: str = "runs"
    """Folder holding one folder per run (checkpoints, weights, metrics, TensorBoard)."""
    reports_dir: str = "reports"
    """Folder for the HTML report and metrics JSON of every run."""
    tensorboard: bool = True
    """TensorBoard event files in ``<run directory>/tb``: per-epoch scalars, and at the end the
    hyperparameters beside the test metrics (hparams tab), the 95% intervals and example images."""
    mlflow: str = ""
    """MLflow tracking URI (``http://host:5000``, ``file:///abs/path/mlruns``, ...); empty: no
    MLflow. Logs the config as params, every epoch's metrics, the test metrics with their
    intervals, and the report, metrics.json and weights as artifacts. Needs ``pip install
    'medsplit[mlflow]'``; MLflow 3 refuses a file store unless ``MLFLOW_ALLOW_FILE_STORE=true``,
    which medsplit sets for a ``file:`` URI (you named one)."""
    keep_checkpoint: bool = False
    """Keep ``checkpoint.pt`` (all parties' weights and optimiser state: 341 MB for a two-hospital
    ResNet-34 relay, measured, against 85 MB for ``model.safetensors``)
    once the run has finished. Off: a finished run keeps its weights in ``model.safetensors`` and
    cannot be continued; on: ``--resume RUN_DIR train.epochs=N --allow-change train.epochs``
    continues it exactly. An unfinished run always keeps its checkpoint."""


@dataclass
class Config:
    task: str = "retinopathy"
    """retinopathy | lungs."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def data_root(self) -> Path:
        return Path(self.data.root) if self.data.root else default_data_root()

    def run_name(self) -> str:
        """``output.name``, else what was run plus a short hash of the rest of the config:
        ``retinopathy-sequential-cut3-clients2-seed0-64px-1a2b3c``, so two runs that differ in any
        trained setting (epochs aside: a resumed run may add epochs) get different folders."""
        if self.output.name:
            return self.output.name
        where = f"cut{self.split.cut}" if protocol_facts(self.split.protocol).split else "whole"
        return (f"{self.task}-{self.split.protocol}-{where}-clients{self.split.clients}-seed{self.train.seed}"
                f"-{self.data.img_size}px-{self.name_hash()}")

    def name_hash(self) -> str:
        """Six hex digits of SHA-256 over every setting but :data:`NAME_HASH_SKIPS`."""
        values = self.to_dict()
        for section, key in NAME_HASH_SKIPS:
            values.get(section, {}).pop(key, None)
        values.pop("output", None)
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:6]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Settings left out of a run name's hash: where each party's data and outputs live (a hospital may
#: set them differently from the server: medsplit.train.party_plan.PER_PARTY_KEYS), the machine it
#: runs on, and what --resume --allow-change may change (train.epochs, train.eval_batch_size), so
#: every party of a run, and a resumed run, keep one name.
NAME_HASH_SKIPS = {("data", "source"), ("data", "root"), ("data", "cache_dir"), ("split", "address"), ("split", "timeout_s"),
                   ("split", "transport"), ("train", "device"), ("train", "threads"), ("train", "epochs"),
                   ("train", "eval_batch_size")}

#: Listing order of the built-in protocols (split ones first); a protocol added as a new module
#: follows them in name order.
BUILTIN_PROTOCOLS = tuple(BUILTIN)
#: The ``split.protocol`` choices (kept under this name for callers of the config package).
protocol_module_names = protocol_names


CHOICES = {
    "task": ("retinopathy", "lungs"),
    "data.target": ("any", "referable", "grade"),
    "data.partition": ("iid", "dirichlet", "label_skew", "group"),
    "data.preprocess": ("none", "local-contrast"),  # = medsplit.data.fundus_contrast.PREPROCESSING (tested)
    "data.rotation": ("any", "right-angles"),
    "data.aug_backend": ("monai", "albumentations"),
    "data.duplicates": ("error", "drop"),
    # Every module of medsplit/train/protocols/ (read from the file names: loading a config
    # needs no torch); tests/train/test_protocols.py checks it equals PROTOCOL_NAMES.
    "split.protocol": protocol_module_names(),
    # Kept literal (not imported from medsplit.split.codecs) so loading a config needs no torch;
    # tests/split/test_codecs.py checks both lists agree.
    "split.compress_activations": ("none", "fp16", "bf16", "int8", "topk0.1", "topk0.01"),
    "split.compress_gradients": ("none", "fp16", "bf16", "int8", "topk0.1", "topk0.01"),
    "split.optimizer_handover": ("carry", "reset", "local"),
    "split.transport": ("inprocess", "gloo", "flare"),
    "train.optimizer": ("adam", "adamw", "sgd"),
    "train.schedule": ("constant", "cosine"),
    "train.sampling": ("shuffle", "class-balanced"),
}
