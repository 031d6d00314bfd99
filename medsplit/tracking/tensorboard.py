"""TensorBoard backend: scalars per epoch; at the end the hparams tab (the config beside the test
metrics), the test metrics with their 95% intervals, and example images."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from medsplit.tracking import TrackedRun
from medsplit.tracking.readings import epoch_scalars, run_params, final_scalars, tracked_images

__all__ = ["TensorBoardTracker"]


class TensorBoardTracker:
    """Event files in ``<run directory>/tb`` (``tensorboard --logdir <run directory>/tb``).

    Args:
        run: the run; its config is logged as text now, as hparams when the run finishes.
        run_dir: the run directory.
    """

    def __init__(self, run: TrackedRun, run_dir: Path) -> None:
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"))
        self.epochs = run.epochs
        self.params = run_params(run.params)
        self.writer.add_text("config", "```\n" + run.config_yaml + "\n```")

    def epoch(self, history: list[dict], epoch: int) -> None:
        for tag, value in epoch_scalars(history, epoch).items():
            self.writer.add_scalar(tag, value, epoch)
        self.writer.flush()

    def finish(self, result: dict, images: dict | None) -> None:
        metrics = final_scalars(result)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, self.epochs)
        # The hparams tab reads its metric values from these same scalar tags of this run, so the
        # summaries go to this writer's own file (add_hparams would open a second run folder).
        file_writer = self.writer._get_file_writer()
        for summary in hparams(self.params, metrics):
            file_writer.add_summary(summary)
        for tag, image in tracked_images(images).items():
            self.writer.add_image(tag, image, self.epochs, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
