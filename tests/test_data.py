import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlab.data import DeviceLoader, load_dataset, make_loader
from kdlab.data.readers import read_idx, read_mnist_idx
from kdlab.data.spec import parse_spec
from kdlab.errors import DataError


def test_digits_is_the_embedded_default():
    d = load_dataset("digits")
    assert len(d.train) + len(d.test) == 1797 and len(d.test) == 449
    assert d.image_shape == (1, 8, 8) and d.num_classes == 10
    assert d.train.images.dtype == torch.uint8 and int(d.train.images.max()) == 255
    again = load_dataset("digits")
    assert torch.equal(d.test.labels, again.test.labels)  # fixed split


def _write_cifar10(root, n=6):
    rng = np.random.default_rng(0)
    root.mkdir()
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        batches[name] = (data, labels)
        with open(root / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": data, b"labels": labels}, f)
    return batches


def test_cifar10_pickles(tmp_path):
    batches = _write_cifar10(tmp_path / "cifar-10-batches-py")
    d = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    assert d.train.images.shape == (30, 3, 32, 32) and d.test.images.shape == (6, 3, 32, 32)
    data, labels = batches["test_batch"]
    # CIFAR rows are 1024 R, then 1024 G, then 1024 B bytes, each row-major 32×32.
    assert torch.equal(d.test.images[2, 1], torch.from_numpy(data[2, 1024:2048].reshape(32, 32)))
    assert d.test.labels.tolist() == [int(v) for v in labels]


def test_cifar100_pickles(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    with open(root / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": []}, f)
    for split, n in (("train", 8), ("test", 4)):
        with open(root / split, "wb") as f:
            pickle.dump({"data": np.zeros((n, 3072), np.uint8), "fine_labels": list(range(n))}, f)
    d = load_dataset(f"cifar100:{root}")
    assert d.num_classes == 100 and len(d.train) == 8 and d.classes[3] == "f3"


class _Evil:
    def __reduce__(self):
        return (print, ("this ran on load",))


def test_malicious_cifar_pickle_is_refused(tmp_path, capsys):
    root = tmp_path / "cifar-10-batches-py"
    _write_cifar10(root)
    (root / "data_batch_3").write_bytes(pickle.dumps({"data": _Evil(), "labels": []}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_dataset(f"cifar10:{root}")
    assert "this ran on load" not in capsys.readouterr().out


@pytest.mark.parametrize("folder", ["cifar-100-python", "cifar-10-batches-py"])
def test_truncated_cifar_is_a_clear_error(shared_data, tmp_path, folder):
    """The real, cut-off official pickles from ../shared/data/cifar-truncated."""
    src = shared_data / "cifar-truncated" / folder
    dst = tmp_path / folder
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name.replace(".TRUNCATED", ""))
    if folder == "cifar-10-batches-py":  # data_batch_2..5 are absent from the sample: give them a body
        for i in range(2, 6):
            shutil.copy(dst / "data_batch_1", dst / f"data_batch_{i}")
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset(f"{folder.split('-')[0]}{'100' if '100' in folder else '10'}:{dst}")


def _write_tree(root, classes=("cat", "dog"), n=3, size=(5, 4), mode="RGB"):
    rng = np.random.default_rng(1)
    pixels = {}
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(root / split / c / f"{i}.png")
                pixels[(split, c, i)] = arr
    return pixels


def test_imagefolder_png_tree(tmp_path):
    pixels = _write_tree(tmp_path / "tree", classes=("zebra", "ant"))
    d = load_dataset(f"imagefolder:{tmp_path / 'tree'}")
    assert d.classes == ["ant", "zebra"] and d.image_shape == (3, 4, 5)
    assert d.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(d.train.images[4].permute(1, 2, 0).numpy(), pixels[("train", "zebra", 1)])


def test_imagefolder_tar_archive_equals_folder(tmp_path):
    _write_tree(tmp_path / "tree" / "mydata", mode="L")
    shutil.make_archive(str(tmp_path / "mydata"), "gztar", tmp_path / "tree")
    a = load_dataset(f"imagefolder:{tmp_path / 'tree' / 'mydata'}")
    b = load_dataset(f"imagefolder:{tmp_path / 'mydata.tar.gz'}")
    assert a.image_shape == (1, 4, 5)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)


def test_imagefolder_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    _write_tree(tmp_path / "corrupt")
    (tmp_path / "corrupt" / "train" / "cat" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"train/cat/1.png is unreadable or corrupt"):
        load_dataset(f"imagefolder:{tmp_path / 'corrupt'}")
    _write_tree(tmp_path / "mismatch")
    shutil.rmtree(tmp_path / "mismatch" / "test" / "dog")
    with pytest.raises(DataError, match="class folders differ"):
        load_dataset(f"imagefolder:{tmp_path / 'mismatch'}")
    _write_tree(tmp_path / "hollow")  # a class folder with no images would silently drop a class
    (tmp_path / "hollow" / "train" / "emu").mkdir()
    (tmp_path / "hollow" / "train" / "emu" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder .*train/emu has no images"):
        load_dataset(f"imagefolder:{tmp_path / 'hollow'}")
    _write_tree(tmp_path / "mixed")
    Image.fromarray(np.zeros((4, 5), np.uint8), "L").save(tmp_path / "mixed" / "train" / "cat" / "9.png")
    with pytest.raises(DataError, match="mixes grey and colour"):
        load_dataset(f"imagefolder:{tmp_path / 'mixed'}")


def test_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(root / "train" / w / "images" / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate([wnids[1], wnids[0], wnids[1]]):
        Image.new("RGB", (8, 8)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    d = load_dataset(f"tinyimagenet:{root}")
    assert d.classes == ["goldfish", "European fire salamander"]
    assert d.test.labels.tolist() == [1, 0, 1] and d.train.images.shape == (4, 3, 8, 8)


def test_mnist_idx_real_files(shared_data, tmp_path):
    images = read_idx(shared_data / "mnist-idx" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "mnist-idx" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist()[:3] == [980, 1135, 1032]  # the official test-set class counts
    # A complete idx folder (train files stood in by the t10k ones) reads through the mnist: spec.
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            shutil.copy(shared_data / "mnist-idx" / f"t10k-{kind}-ubyte.gz", tmp_path / f"{split}-{kind}-ubyte.gz")
    d = read_mnist_idx(tmp_path)
    assert d.train_images.shape == (10000, 1, 28, 28)
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "cut-idx3-ubyte").write_bytes(raw[:5000])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut-idx3-ubyte")


@pytest.mark.parametrize(
    ("spec", "train", "test", "classes", "shape"),
    [
        ("cifar10:{}/cifar10-jpg.tar.gz", 50000, 10000, 10, (3, 32, 32)),
        ("cifar100:{}/cifar100-jpg.tar.gz", 50000, 10000, 100, (3, 32, 32)),
        ("mnist:{}/mnist-png.tar.gz", 60000, 10000, 10, (1, 28, 28)),
    ],
)
def test_real_shared_data_loads_and_caches(shared_data, spec, train, test, classes, shape):
    d = load_dataset(spec.format(shared_data))
    assert (len(d.train), len(d.test), d.num_classes, d.image_shape) == (train, test, classes, shape)
    counts = torch.bincount(d.train.labels, minlength=classes)
    assert int(counts.min()) == int(counts.max()) == train // classes or (classes == 10 and spec.startswith("mnist"))
    again = load_dataset(spec.format(shared_data))  # from the .npy cache
    assert torch.equal(again.train.images, d.train.images) and again.classes == d.classes
    if classes == 100:
        # Normalisation statistics close to the CIFAR-100 constants of the CRD code.
        assert d.mean == pytest.approx((0.5071, 0.4865, 0.4409), abs=3e-3)


def test_subset_first_per_class():
    d = load_dataset("digits", train_per_class=5, test_per_class=2)
    assert torch.bincount(d.train.labels).tolist() == [5] * 10 and len(d.test) == 20


def test_spec_errors():
    assert parse_spec("digits") == ("digits", None)
    with pytest.raises(DataError, match="did you mean: cifar100"):
        load_dataset("cifar1000:/x")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar100:/no/such/folder")


def test_device_loader_covers_each_sample_once():
    d = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    loader = DeviceLoader(d.train, 100, torch.device("cpu"), shuffle=True, generator=g)
    seen = torch.cat([b.index for b in loader])
    assert len(loader) == 14 and sorted(seen.tolist()) == list(range(len(d.train)))
    batch = next(iter(loader))
    assert torch.equal(batch.labels, d.train.labels[batch.index])
    g2 = torch.Generator().manual_seed(0)
    again = torch.cat([b.index for b in DeviceLoader(d.train, 100, torch.device("cpu"), generator=g2)])
    assert torch.equal(seen, again)
    dropped = DeviceLoader(d.train, 100, torch.device("cpu"), drop_last=True, generator=g)
    assert len(dropped) == 13 and dropped.num_samples == 1300


@pytest.fixture(scope="module")
def cifar10_folder(shared_data, tmp_path_factory) -> Path:
    """The first 30 train and 10 test JPEGs of each CIFAR-10 class, extracted as an ImageFolder tree."""
    import tarfile

    root = tmp_path_factory.mktemp("c10")
    kept: dict[tuple[str, str], int] = {}
    with tarfile.open(shared_data / "cifar10-jpg.tar.gz") as tar:
        for m in tar:
            parts = m.name.split("/")
            if not m.isfile() or len(parts) < 4:
                continue
            key = (parts[-3], parts[-2])
            if kept.get(key, 0) < (30 if parts[-3] == "train" else 10):
                kept[key] = kept.get(key, 0) + 1
                tar.extract(m, root, filter="data")
    return root / "cifar10-jpg"


def test_streaming_equals_in_memory_on_a_cifar10_jpeg_folder(cifar10_folder, tmp_path):
    from kdlab.config import load_config
    from kdlab.data.streaming import StreamingDataset
    from kdlab.experiment import train

    memory = load_dataset(f"imagefolder:{cifar10_folder}", stream="off")
    streamed = load_dataset(f"imagefolder:{cifar10_folder}", stream="on")
    assert isinstance(streamed, StreamingDataset) and not isinstance(memory, StreamingDataset)
    assert streamed.classes == memory.classes and streamed.image_shape == memory.image_shape == (3, 32, 32)
    assert torch.equal(streamed.train.labels, memory.train.labels) and len(streamed.test) == 100
    assert streamed.mean == pytest.approx(memory.mean, abs=1e-9)
    # One epoch each way, same seed: the streamed batches are the in-memory batches, so the run is the same.
    records = {}
    for mode in ("off", "on"):
        cfg = load_config(None, [f"data.dataset=imagefolder:{cifar10_folder}", f"data.stream={mode}",
                                 "data.workers=2", "student.name=resnet8", "schedule.kind=cosine",
                                 "schedule.epochs=1", "engine.progress=false", f"output_dir={tmp_path}",
                                 f"name={mode}"])  # fmt: skip
        run_dir, _ = train(cfg, log=lambda _: None)
        line = json.loads((run_dir / "metrics.jsonl").read_text())
        records[mode] = {k: v for k, v in line.items() if k not in ("epoch_time_s", "images_per_s")}
    assert records["on"] == records["off"]


def test_streaming_workers_live_across_epochs_and_stop_on_close(tmp_path, monkeypatch):
    """The decoding workers start once and serve every epoch (each epoch's crop seed reaches them with the
    indices), give the batches that fresh workers per epoch give, and are gone after close()."""
    import os

    from kdlab.data import streaming

    _write_tree(tmp_path / "tree", n=8, size=(40, 24))
    data = load_dataset(f"imagefolder:{tmp_path / 'tree'}", stream="on", image_size=16)
    pids = tmp_path / "pids"
    real = streaming.decode_fixed

    def recording(*args):  # runs in the (forked) workers
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(*args)

    monkeypatch.setattr(streaming, "decode_fixed", recording)

    def epochs(reuse: bool) -> list[list[torch.Tensor]]:
        loader = make_loader(data, "train", 4, torch.device("cpu"), True, generator=torch.Generator().manual_seed(3),
                             workers=2)  # fmt: skip
        out = []
        for _ in range(3):
            out.append([b.images for b in loader])
            if not reuse:
                loader.close()
        loader.close()
        return out

    kept = epochs(reuse=True)
    workers = {int(x) for x in pids.read_text().split()}
    assert len(workers) == 2  # three epochs, the same two processes
    assert all(not os.path.exists(f"/proc/{pid}") for pid in workers)  # stopped by close()
    assert not torch.equal(kept[0][0], kept[1][0])  # a new crop seed each epoch
    fresh = epochs(reuse=False)
    assert all(torch.equal(a, b) for e, f in zip(kept, fresh, strict=True) for a, b in zip(e, f, strict=True))


def test_a_streamed_run_is_evaluated_and_analysed_on_its_own_crops(tmp_path):
    """`kdlab eval` and `kdlab analyze` of a run on streamed images (40×24 files, 16-px crops) read them as the
    run did: the evaluation reproduces the logged test accuracy on every test image, and the analysis runs on a
    sample decoded into memory."""
    from kdlab.commands.analysis import analyze_run
    from kdlab.config import load_config
    from kdlab.experiment import evaluate_path, train

    _write_tree(tmp_path / "tree", n=8, size=(40, 24))
    cfg = load_config(None, [f"data.dataset=imagefolder:{tmp_path / 'tree'}", "data.stream=on", "data.image_size=16",
                             "data.crop_padding=0", "data.workers=1", "student.name=resnet8", "schedule.epochs=2",
                             "engine.progress=false", "engine.report=false", f"output_dir={tmp_path}"])  # fmt: skip
    run_dir, summary = train(cfg, log=lambda _: None)
    numbers = evaluate_path(run_dir, which="last")
    assert numbers["samples"] == 16 and numbers["test_acc"] == pytest.approx(summary["last_epoch_test_acc"])
    result = analyze_run(run_dir, which="last", examples=2, log=lambda _: None)
    assert result["samples"] == 16
    assert result["models"]["student"]["test_acc"] == pytest.approx(summary["last_epoch_test_acc"])
    sample = load_dataset(f"imagefolder:{tmp_path / 'tree'}", stream="on", image_size=16).decoded(8, workers=0)
    assert sample.test.images.shape == (8, 3, 16, 16) and sample.test.labels.tolist() == [0] * 4 + [1] * 4


def test_streaming_needs_a_folder_and_crops_other_sizes(tmp_path):
    from kdlab.data.streaming import decode_fixed

    _write_tree(tmp_path / "tree", size=(40, 24))
    shutil.make_archive(str(tmp_path / "tree"), "gztar", tmp_path / "tree")
    with pytest.raises(DataError, match="extract an archive first"):
        load_dataset(f"imagefolder:{tmp_path / 'tree.tar.gz'}", stream="on")
    d = load_dataset(f"imagefolder:{tmp_path / 'tree'}", stream="on", image_size=16)
    assert d.image_shape == (3, 16, 16)
    import random

    f = d.train.files[0]
    a, b = decode_fixed(f, 16, 3, random.Random(1)), decode_fixed(f, 16, 3, random.Random(1))
    assert a.shape == (3, 16, 16) and a.dtype == np.uint8 and np.array_equal(a, b)  # seeded crop
    assert decode_fixed(f, 16, 3, None).shape == (3, 16, 16)  # test: resize + centre crop


def test_a_prepared_store_trains_as_its_source_and_resumes_exactly(cifar10_folder, tmp_path):
    """`kdlab prepare` of a CIFAR-10 JPEG folder (32 px ≤ --max-side: every file kept byte for byte) gives the
    in-memory dataset's classes, labels and statistics, the same epoch as the in-memory run, and a run stopped
    after epoch 1 and resumed ends where the uninterrupted one does."""
    import tarfile

    from kdlab.cli import main
    from kdlab.config import load_config
    from kdlab.experiment import train

    out = tmp_path / "prep"
    assert main(["prepare", f"imagefolder:{cifar10_folder}", str(out), "--shard-images", "128", "--workers", "1"]) == 0
    manifest = json.loads((out / "kdlab-prepared.json").read_text())
    assert manifest["images"] == {"train": 300, "test": 100} and len(manifest["shards"]["train"]) == 3
    with tarfile.open(out / "train-000000.tar") as tar:  # WebDataset's layout: KEY.jpg + KEY.cls per sample
        names = tar.getnames()[:2]
    assert sorted(names) == ["000000000.cls", "000000000.jpg"]
    memory = load_dataset(f"imagefolder:{cifar10_folder}", stream="off")
    prepared = load_dataset(f"prepared:{out}")
    assert prepared.classes == memory.classes and prepared.image_shape == (3, 32, 32)
    assert torch.equal(prepared.train.labels, memory.train.labels) and prepared.mean == pytest.approx(memory.mean)
    import webdataset  # any WebDataset pipeline reads the shards: images, and labels as integers (KEY.cls)

    shard = (
        webdataset.WebDataset(str(out / "train-000000.tar"), shardshuffle=False).decode("rgb8").to_tuple("jpg", "cls")
    )
    images, labels = zip(*shard, strict=True)
    assert list(labels) == memory.train.labels[:128].tolist()
    assert torch.equal(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), memory.train.images[:128])

    def run(spec: str, name: str, epochs: int, stop: int | None = None, resume=None) -> dict:
        cfg = load_config(None, [f"data.dataset={spec}", "data.workers=2", "student.name=resnet8",
                                 "schedule.kind=cosine", f"schedule.epochs={epochs}", "engine.progress=false",
                                 "engine.report=false", f"output_dir={tmp_path}", f"name={name}"])  # fmt: skip
        run_dir, _ = train(cfg, resume, stop_after_epoch=stop, log=lambda _: None)
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        return {k: v for k, v in last.items() if k not in ("epoch_time_s", "images_per_s")}

    assert run(f"prepared:{out}", "prep", 1) == run(f"imagefolder:{cifar10_folder}", "memory", 1)
    straight = run(f"prepared:{out}", "straight", 2)
    run(f"prepared:{out}", "stopped", 2, stop=1)
    assert run(f"prepared:{out}", "stopped", 2, resume=tmp_path / "stopped") == straight


def test_prepare_resizes_larger_images_and_refuses_a_used_folder(tmp_path):
    """Images over --max-side are stored resized (longer side = max side, JPEG); a prepared folder is not
    overwritten; a folder that is not prepared is named in one line."""
    from kdlab.data.prepared import prepare

    _write_tree(tmp_path / "tree", size=(40, 24))
    prepare(f"imagefolder:{tmp_path / 'tree'}", tmp_path / "p", max_side=20, quality=95, workers=1)
    d = load_dataset(f"prepared:{tmp_path / 'p'}", image_size=12)
    from PIL import Image

    with Image.open(d.train.source(0)) as img:
        assert img.format == "JPEG" and img.size == (20, 12)
    assert d.image_shape == (3, 12, 12) and len(d.train) == 6
    from kdlab.data.check import check_dataset

    report = check_dataset(f"prepared:{tmp_path / 'p'}")  # `kdlab data check` hashes the stored images
    assert report["train"] == 6 and report["duplicates"] == {"within_train": 0, "within_test": 0,
                                                              "test_images_also_in_train": 0}  # fmt: skip
    with pytest.raises(DataError, match="already holds"):
        prepare(f"imagefolder:{tmp_path / 'tree'}", tmp_path / "p", workers=1)
    with pytest.raises(DataError, match="not a prepared dataset"):
        load_dataset(f"prepared:{tmp_path / 'tree'}")


def test_default_decoding_workers_use_the_cores_but_one_shared_per_node(monkeypatch):
    from kdlab.data import streaming

    monkeypatch.setattr(streaming.os, "cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert streaming.default_workers() == 15  # no cap of 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert streaming.default_workers() == 3
    monkeypatch.setattr(streaming.os, "cpu_count", lambda: 2)
    assert streaming.default_workers() == 1
