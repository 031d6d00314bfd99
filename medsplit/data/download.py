"""Fetch public data sets: RetinaMNIST (Zenodo), Kaggle's resized EyePACS retinopathy set and
Kaggle's Montgomery + Shenzhen lung masks. The only module of the data layer that uses the
network; called by ``make data`` / ``python -m medsplit data``, never during training or tests.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from medsplit.data.duplicates import file_digest
from medsplit.data.errors import DataError
from medsplit.data.lung_folder import KAGGLE_DIR as KAGGLE_LUNGS_DIR
from medsplit.data.lung_folder import KAGGLE_LUNGS_DATASET, find_set_root

__all__ = ["RETINAMNIST_URLS", "RETINAMNIST_MD5", "KAGGLE_DATASET", "KAGGLE_LUNGS_DATASET", "download_retinamnist",
           "download_kaggle_retinopathy", "download_kaggle_lungs"]

# MedMNIST v2's Zenodo record (newest first; older records hold the same bytes).
RETINAMNIST_URLS = (
    "https://zenodo.org/records/10519652/files/retinamnist.npz?download=1",
    "https://zenodo.org/records/5208230/files/retinamnist.npz?download=1",
)
RETINAMNIST_MD5 = "bd4c0672f1bba3e3a89f0e4e876791e4"
KAGGLE_DATASET = "tanlikesmath/diabetic-retinopathy-resized"


def download_retinamnist(data_root: Path) -> Path:
    """Download RetinaMNIST (MedMNIST v2, 28 px) to ``data_root/retinopathy/retinamnist/retinamnist.npz``.

    A file already there with the right MD5 is kept. The download goes to a temporary
    file that is checked before it replaces anything.

    Args:
        data_root: root of the data tree.

    Returns:
        The path of the verified ``.npz``.

    Raises:
        DataError: every address failed (network) or the bytes have the wrong MD5.
    """
    target = Path(data_root) / "retinopathy" / "retinamnist" / "retinamnist.npz"
    if target.is_file() and _md5(target) == RETINAMNIST_MD5:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    failures = []
    for url in RETINAMNIST_URLS:
        try:
            _fetch(url, partial)
        except (urllib.error.URLError, OSError) as error:
            failures.append(f"{url}: {error}")
            continue
        digest = _md5(partial)
        if digest != RETINAMNIST_MD5:
            failures.append(f"{url}: MD5 {digest}, expected {RETINAMNIST_MD5}")
            continue
        os.replace(partial, target)
        return target
    partial.unlink(missing_ok=True)
    raise DataError(
        "could not download RetinaMNIST: " + "; ".join(failures)
        + f". Check the network, or download retinamnist.npz from MedMNIST (https://medmnist.com) and place it at {target}"
    )


def download_kaggle_retinopathy(data_root: Path) -> Path:
    """Download Kaggle's "diabetic-retinopathy-resized" (EyePACS, about 35,000 images) to
    ``data_root/retinopathy/kaggle`` and unzip it there.

    Needs Kaggle API credentials: ``~/.kaggle/kaggle.json`` (or ``$KAGGLE_CONFIG_DIR/kaggle.json``),
    ``KAGGLE_USERNAME`` and ``KAGGLE_KEY``, or a Kaggle API token (``KAGGLE_API_TOKEN`` or
    ``~/.kaggle/access_token``), and acceptance of the dataset's terms on kaggle.com.

    Args:
        data_root: root of the data tree.

    Returns:
        The dataset folder (contains ``trainLabels.csv`` and ``resized_train*/``).

    Raises:
        DataError: no credentials, the ``kaggle`` package is missing, or the download failed
            (the message says what to do).
    """
    target = Path(data_root) / "retinopathy" / "kaggle"
    if (target / "trainLabels.csv").is_file():
        return target
    where = _kaggle_credentials()
    if where is None:
        raise DataError(
            "no Kaggle credentials: create an API token at https://www.kaggle.com/settings (API section) and save "
            "kaggle.json to ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY "
            f"(or KAGGLE_API_TOKEN); then accept the terms of https://www.kaggle.com/datasets/{KAGGLE_DATASET} and run `make data` again"
        )
    try:
        # Importing kaggle authenticates immediately, so it happens only here, after the check above.
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as error:
        raise DataError(f"the kaggle package is not installed ({error}); pip install kaggle") from error
    target.mkdir(parents=True, exist_ok=True)
    try:
        api = KaggleApi()
        api.authenticate()
        api.dataset_download_files(KAGGLE_DATASET, path=str(target), quiet=False, unzip=False)
    except (Exception, SystemExit) as error:  # the client raises many types, and SystemExit on bad config
        raise DataError(
            f"Kaggle download of {KAGGLE_DATASET} failed ({type(error).__name__}: {error}); credentials from {where}. "
            "Check the network, that the credentials are valid, and that you accepted the dataset's terms on kaggle.com"
        ) from error
    _unzip_all(target)
    if not any(target.glob("*.csv")):
        raise DataError(f"the Kaggle download in {target} holds no labels CSV; remove the folder and run `make data` again")
    return target


def download_kaggle_lungs(data_root: Path) -> Path:
    """Download Montgomery + Shenzhen lung masks from Kaggle into ``data_root/lungs/kaggle-lungs``.

    Uses the ``kaggle`` package (dataset ``nikhilpandey360/chest-xray-masks-and-labels``); needs
    ``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY`` (or ``KAGGLE_API_TOKEN``).
    Returns at once when the set is already there.

    Args:
        data_root: the data folder; the set lands in ``data_root/lungs/kaggle-lungs``.

    Raises:
        DataError: no ``kaggle`` package, no credentials, no network, or an unexpected archive layout.
    """
    target = Path(data_root) / "lungs" / KAGGLE_LUNGS_DIR
    if find_set_root(target) is not None:
        return target
    how = f"or download {KAGGLE_LUNGS_DATASET} by hand and unzip it into {target}"
    try:
        # kaggle authenticates when imported: only when a Kaggle download runs
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as error:
        # a broken install (e.g. kaggle 2.x without its `six` dependency) lands here too: name the cause
        raise DataError(f"the Kaggle download needs a working `kaggle` package (pip install kaggle; import failed: {error}), {how}") from error
    api = KaggleApi()
    try:
        api.authenticate()
    except (Exception, SystemExit) as error:  # the kaggle package calls exit(1) without credentials
        raise DataError(
            "Kaggle credentials not found: put kaggle.json in ~/.kaggle/ (or set KAGGLE_USERNAME and KAGGLE_KEY, "
            f"or KAGGLE_API_TOKEN), {how}"
        ) from error
    target.mkdir(parents=True, exist_ok=True)
    try:
        api.dataset_download_files(KAGGLE_LUNGS_DATASET, path=str(target), unzip=True, quiet=False)
    except (Exception, SystemExit) as error:
        raise DataError(f"downloading {KAGGLE_LUNGS_DATASET} failed ({type(error).__name__}: {error}); check the network, {how}") from error
    if find_set_root(target) is None:
        raise DataError(f"{target} holds no folder with CXR_png/ (or images/) and masks/ after the download; {how}")
    return target


def _kaggle_credentials() -> str | None:
    """Where Kaggle credentials would come from, or None when there are none."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    config = config_dir / "kaggle.json"
    if config.is_file():
        try:
            values = json.loads(config.read_text())
        except (OSError, ValueError):
            return None
        if values.get("username") and values.get("key"):
            return str(config)
    if (config_dir / "access_token").is_file():
        return str(config_dir / "access_token")
    return None


def _fetch(url: str, path: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "medsplit-data"})
    with urllib.request.urlopen(request, timeout=60) as response, path.open("wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _md5(path: Path) -> str:
    return file_digest(path, "md5")


def _unzip_all(folder: Path) -> None:
    for archive in sorted(folder.glob("*.zip")):
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(folder)
        except zipfile.BadZipFile as error:
            raise DataError(f"{archive} is not a valid zip ({error}); delete it and run `make data` again") from error
        archive.unlink()
