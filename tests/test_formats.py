"""Dataset formats: VOC, ImageNet boxes and plain folders beside COCO — masks, selection,
confinement, one-line errors, and one run on the same photos given in three formats."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as cocomask
from scipy import ndimage

from xcnn.cli import main
from xcnn.data import BoxDataset, FolderDataset, VocDataset, imagenet_classes, imagenet_wnids
from xcnn.errors import XcnnError
from xcnn.experiment import load_config, run

H, W = 48, 64
VOC_INDEX = {"cat": 8, "dog": 12}  # VOC class indices
CHIHUAHUA, TABBY = "n02085620", "n02123045"  # ImageNet classes 151 and 281


def _rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _triangle() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy >= 4) & (yy <= 28) & (np.abs(xx - 20) <= (yy - 4) * 0.8)


# photo -> its objects (category, mask); "d" has two dogs, "b" a dog and a (polygon) cat
OBJECTS: dict[str, list[tuple[str, np.ndarray]]] = {
    "a": [("dog", _rect(8, 30, 10, 40))],
    "b": [("cat", _triangle()), ("dog", _rect(32, 44, 40, 60))],
    "c": [("cat", _rect(5, 40, 5, 30))],
    "d": [("dog", _rect(5, 20, 5, 25)), ("dog", _rect(25, 42, 35, 60))],
}


def truth(photo: str, category: str) -> np.ndarray:
    return np.logical_or.reduce([m for c, m in OBJECTS[photo] if c == category])


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def _photos(dest: Path) -> dict[str, Path]:
    """The same JPEG bytes for every format (one decoder, one set of pixels)."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for name in OBJECTS:
        out[name] = dest / f"{name}.jpg"
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(out[name], quality=95)
    return out


def make_voc(root: Path, photos: dict[str, Path] | None = None) -> Path:
    """VOC2012 layout; each object wears a 1-pixel void (255) ring outside its true mask, and
    photo c's class map has a few stray dog pixels inside its cat (the majority wins)."""
    src = photos or _photos(root / "JPEGImages")
    for sub in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    palette = [0, 0, 0] + [v for k in range(1, 256) for v in ((k * 47) % 256, (k * 91) % 256, (k * 13) % 256)]
    for name, objects in OBJECTS.items():
        if src[name].parent != root / "JPEGImages":
            shutil.copy(src[name], root / "JPEGImages" / f"{name}.jpg")
        obj, cls = np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)
        for k, (category, m) in enumerate(objects, start=1):
            ring = ndimage.binary_dilation(m) & ~m
            obj[ring], cls[ring] = 255, 255
            obj[m], cls[m] = k, VOC_INDEX[category]
        if name == "c":
            cls[10:12, 10:14] = VOC_INDEX["dog"]
        for arr, sub in ((obj, "SegmentationObject"), (cls, "SegmentationClass")):
            img = Image.fromarray(arr)
            img.putpalette(palette)  # an L image with a palette becomes P, as VOC ships it
            img.save(root / sub / f"{name}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(["d", "b", "a", "c"]) + "\n")
    return root


def make_folder(root: Path, photos: dict[str, Path], order: list[int] | None = None) -> Path:
    """photos/<name>.jpg, one mask PNG per object; photo d's two dogs are two rows."""
    (root / "photos").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for name, objects in OBJECTS.items():
        shutil.copy(photos[name], root / "photos" / f"{name}.jpg")
        for k, (category, m) in enumerate(objects):
            Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{name}_{k}.png")
            rows.append(f"photos/{name}.jpg,masks/{name}_{k}.png,{category}")
    rows = [rows[i] for i in order] if order else rows
    (root / "masks.csv").write_text("image,mask,category\n" + "\n".join(rows) + "\n")
    return root


def make_coco(root: Path, photos: dict[str, Path]) -> tuple[Path, Path]:
    """The same objects as RLEs (exact pixels, no polygon rasterisation in between)."""
    (root / "images").mkdir(parents=True)
    cats = [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}]
    images, anns = [], []
    for i, (name, objects) in enumerate(OBJECTS.items(), start=1):
        shutil.copy(photos[name], root / "images" / f"{name}.jpg")
        images.append({"id": i, "file_name": f"{name}.jpg", "height": H, "width": W})
        for category, m in objects:
            rle = cocomask.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 17 if category == "cat" else 18,
                         "iscrowd": 0, "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann, root / "images"


def make_boxes(root: Path, filename: str | None = None) -> tuple[Path, Path]:
    """ILSVRC-style: photos ILSVRC2012_val_0000000N.JPEG, XMLs naming them without the suffix."""
    (root / "val").mkdir(parents=True)
    (root / "xml").mkdir()
    rng = np.random.default_rng(1)
    boxes = {  # 1-based, both ends included
        1: [(CHIHUAHUA, (1, 1, 10, 5)), (CHIHUAHUA, (5, 3, 20, 12)), (TABBY, (30, 30, 64, 48))],
        2: [(TABBY, (0, 10, 70, 30))],  # xmin 0 and xmax past the edge: clipped
        3: [(CHIHUAHUA, (11, 11, 50, 40))],
    }
    for n, objects in boxes.items():
        stem = f"ILSVRC2012_val_{n:08d}"
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "val" / f"{stem}.JPEG", "JPEG")
        objs = "".join(f"<object><name>{w}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                       f"<ymax>{b[3]}</ymax></bndbox></object>" for w, b in objects)
        name = filename if (filename and n == 1) else stem
        (root / "xml" / f"{stem}.xml").write_text(
            f"<annotation><folder>val</folder><filename>{name}</filename><size><width>{W}</width>"
            f"<height>{H}</height><depth>3</depth></size>{objs}</annotation>")
    return root / "val", root / "xml"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _photos(tmp_path_factory.mktemp("photos"))


# --- VOC ------------------------------------------------------------------------------------

def test_voc_instances_void_border_and_majority_class(tmp_path: Path, photos: dict[str, Path]) -> None:
    ds = VocDataset(make_voc(tmp_path / "VOC2012", photos))
    assert "airplane" in ds.categories and "dining table" in ds.categories and len(ds.categories) == 20
    for photo, objects in OBJECTS.items():
        for category in {c for c, _ in objects}:
            m = ds.mask(f"JPEGImages/{photo}.jpg", category)
            assert np.array_equal(m, truth(photo, category)), (photo, category)
            ring = ndimage.binary_dilation(m) & ~m
            assert ring.any() and not m[ring].any()  # the void border lies outside the mask
    # photo c's stray dog pixels in SegmentationClass make no dog: classes come from instances
    samples, skipped = ds.select(["dog", "Cat"], 10, seed=0, min_area=0.01)
    got = {(s.category, s.image_id) for s in samples}
    assert got == {("dog", "JPEGImages/a.jpg"), ("dog", "JPEGImages/b.jpg"), ("dog", "JPEGImages/d.jpg"),
                   ("cat", "JPEGImages/b.jpg"), ("cat", "JPEGImages/c.jpg")}
    assert skipped == {}
    assert all(s.file == tmp_path / "VOC2012" / s.image_id for s in samples)


def test_voc_order_digest_and_errors(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = make_voc(tmp_path / "one" / "VOC2012", photos)
    ds = VocDataset(root)
    picked = [s.image_id for s in ds.select(["dog"], 2, seed=3)[0]]
    # the split file's order does not matter, only the seed
    (root / "ImageSets/Segmentation/val.txt").write_text("a\nc\nb\nd\n")
    assert [s.image_id for s in VocDataset(root).select(["dog"], 2, seed=3)[0]] == picked
    # moved: same identity; one mask pixel changed: another
    moved = tmp_path / "two" / "VOC"
    shutil.copytree(root, moved)
    assert VocDataset(moved).digest() == ds.digest()
    obj = np.asarray(Image.open(moved / "SegmentationObject/a.png")).copy()
    obj[0, 0] = 1
    img = Image.fromarray(obj)
    img.putpalette(Image.open(moved / "SegmentationObject/a.png").getpalette() or [])
    img.save(moved / "SegmentationObject/a.png")
    assert VocDataset(moved).digest() != ds.digest()

    with pytest.raises(XcnnError, match="not a folder") as err:
        VocDataset(tmp_path / "nope")
    one_line(err)
    with pytest.raises(XcnnError, match="split file .* not found.*val") as err:
        VocDataset(root, split="train")
    one_line(err)
    (root / "SegmentationClass/b.png").unlink()
    with pytest.raises(XcnnError, match="b.png not found") as err:
        VocDataset(root).select(["dog"], 1, seed=0)
    one_line(err)
    with pytest.raises(XcnnError, match="'zebra' is not in .*; it has: ") as err:
        ds.select(["zebra"], 1, seed=0)
    one_line(err)
    with pytest.raises(XcnnError, match="'Dgo' is not in .*; did you mean 'dog'\\?$") as err:
        ds.select(["Dgo"], 1, seed=0)
    one_line(err)


def test_voc_split_line_leading_outside_is_refused(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = make_voc(tmp_path / "VOC2012", photos)
    (root / "ImageSets/Segmentation/val.txt").write_text("a\n../../../secret\n")
    with pytest.raises(XcnnError, match="leads outside") as err:
        VocDataset(root)
    assert "secret" in one_line(err)


# --- ImageNet boxes -------------------------------------------------------------------------

def test_imagenet_boxes_union_clipping_and_selection(tmp_path: Path) -> None:
    image_dir, box_dir = make_boxes(tmp_path)
    ds = BoxDataset(image_dir, box_dir)
    assert ds.categories == [CHIHUAHUA, TABBY]
    one = "ILSVRC2012_val_00000001.JPEG"
    expect = np.zeros((H, W), bool)
    expect[0:5, 0:10] = True  # (1, 1, 10, 5): rows 1..5, columns 1..10, 1-based
    expect[2:12, 4:20] = True
    assert np.array_equal(ds.mask(one, CHIHUAHUA), expect)
    assert np.array_equal(ds.mask(one, TABBY), _rect(29, 48, 29, 64))
    assert np.array_equal(ds.mask("ILSVRC2012_val_00000002.JPEG", TABBY), _rect(9, 30, 0, 64))
    samples, skipped = ds.select([CHIHUAHUA], 5, seed=0, min_area=0.01)
    assert sorted(s.image_id for s in samples) == [one, "ILSVRC2012_val_00000003.JPEG"] and skipped == {}
    assert samples[0].file.parent == image_dir
    # a wnid is its own ImageNet class (the default target rule)
    assert imagenet_classes(CHIHUAHUA) == [151] and imagenet_classes(TABBY) == [281]
    assert len(imagenet_wnids()) == 1000 and imagenet_wnids()[281] == TABBY
    with pytest.raises(XcnnError, match="'n01440764' is not in") as err:
        ds.select(["n01440764"], 1, seed=0)  # a valid wnid the boxes do not have: refused on selection
    one_line(err)


def test_imagenet_boxes_digest_and_errors(tmp_path: Path) -> None:
    image_dir, box_dir = make_boxes(tmp_path / "a")
    digest = BoxDataset(image_dir, box_dir).digest()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert BoxDataset(tmp_path / "b" / "val", tmp_path / "b" / "xml").digest() == digest
    xml = tmp_path / "b" / "xml" / "ILSVRC2012_val_00000003.xml"
    xml.write_text(xml.read_text().replace("<xmin>11</xmin>", "<xmin>12</xmin>"))
    assert BoxDataset(tmp_path / "b" / "val", tmp_path / "b" / "xml").digest() != digest

    xml.write_text("<annotation><size><width>64")
    with pytest.raises(XcnnError, match="cannot parse") as err:
        BoxDataset(tmp_path / "b" / "val", tmp_path / "b" / "xml")
    one_line(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(XcnnError, match="no .xml file") as err:
        BoxDataset(image_dir, tmp_path / "empty")
    one_line(err)
    with pytest.raises(XcnnError, match="not a folder") as err:
        BoxDataset(tmp_path / "nope", box_dir)
    one_line(err)


def test_imagenet_boxes_filename_leading_outside_is_refused(tmp_path: Path) -> None:
    image_dir, box_dir = make_boxes(tmp_path, filename="../../etc/passwd")
    with pytest.raises(XcnnError, match="leads outside") as err:
        BoxDataset(image_dir, box_dir)
    assert "ILSVRC2012_val_00000001.xml" in one_line(err)


# --- folder ---------------------------------------------------------------------------------

def test_folder_union_selection_order_and_digest(tmp_path: Path, photos: dict[str, Path]) -> None:
    ds = FolderDataset(make_folder(tmp_path / "one", photos))
    assert ds.categories == ["cat", "dog"]
    assert np.array_equal(ds.mask("photos/d.jpg", "dog"), truth("d", "dog"))  # two rows, unioned
    assert np.array_equal(ds.mask("photos/b.jpg", "cat"), truth("b", "cat"))
    samples, _ = ds.select(["dog"], 2, seed=5)
    # rows in another order: the same photos, in the same order
    other = FolderDataset(make_folder(tmp_path / "two", photos, order=[5, 3, 0, 4, 2, 1]))
    assert [s.image_id for s in other.select(["dog"], 2, seed=5)[0]] == [s.image_id for s in samples]
    assert other.digest() == ds.digest()
    Image.fromarray(truth("a", "dog").astype(np.uint8)).save(tmp_path / "two" / "masks" / "a_0.png")  # 1, not 255
    assert other.digest() != ds.digest()


def test_folder_errors_and_confinement(tmp_path: Path, photos: dict[str, Path]) -> None:
    root = make_folder(tmp_path / "set", photos)
    csv = root / "masks.csv"
    good = csv.read_text()
    csv.write_text(good + "../outside.jpg,masks/a_0.png,dog\n")
    with pytest.raises(XcnnError, match="line 8.*leads outside") as err:
        FolderDataset(root)
    one_line(err)
    csv.write_text(good + "photos/a.jpg,masks/none.png,dog\n")
    with pytest.raises(XcnnError, match="line 8: mask file .*none.png not found") as err:
        FolderDataset(root)
    one_line(err)
    csv.write_text(good.replace("image,mask,category", "photo,mask,category"))
    with pytest.raises(XcnnError, match="no column image") as err:
        FolderDataset(root)
    one_line(err)
    csv.unlink()
    with pytest.raises(XcnnError, match="masks.csv not found") as err:
        FolderDataset(root)
    one_line(err)


# --- config ---------------------------------------------------------------------------------

CONFIG = """
[data]
{data}
categories = {categories}
images_per_category = 10
seed = 0
min_area = 0.01

[[models]]
name = "resnet18"
weights = "random"

[run]
sizes = [48]
methods = ["gradient", "gradcam"]
batch_size = 1
device = "cpu"
"""


def _config(path: Path, data: str, categories: str = '["dog", "cat"]') -> Path:
    path.write_text(CONFIG.format(data=data, categories=categories))
    return path


@pytest.mark.parametrize("data, expect", [
    ('format = "pascal"\nroot = "x"', "data.format: unknown format 'pascal'"),
    ('format = "voc"', "data.root: missing; format = \"voc\" takes root = a VOC2012-style folder"),
    ('format = "voc"\nroot = "x"\nbox_dir = "y"', 'data.box_dir: not used by format = "voc"'),
    ('ann_file = "a.json"\nimage_dir = "i"\nroot = "r"', 'data.root: not used by format = "coco"'),
    ('format = "imagenet-boxes"\nimage_dir = "i"', "data.box_dir: missing"),
    ('format = "folder"\nroot = "nope"', "data.root: "),
    ('format = "voc"\nroot = "nope"', "is not a folder"),
])
def test_config_data_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, data: str,
                                         expect: str) -> None:
    cfg = _config(tmp_path / "cfg.toml", data)
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
    assert not (tmp_path / "run").exists()


def test_config_checks_category_names_only_where_they_are_coco_names(tmp_path: Path) -> None:
    with pytest.raises(XcnnError, match="'unicorn'"):
        load_config(_config(tmp_path / "voc.toml", 'format = "voc"\nroot = "v"', '["unicorn"]'))
    cfg = load_config(_config(tmp_path / "f.toml", 'format = "folder"\nroot = "f"', '["unicorn"]'))
    assert cfg.data.format == "folder" and cfg.data.root == str((tmp_path / "f").resolve())
    cfg = load_config(_config(tmp_path / "b.toml", 'format = "imagenet-boxes"\nimage_dir = "i"\nbox_dir = "x"',
                              f'["{CHIHUAHUA}"]'))
    assert cfg.data.box_dir == str((tmp_path / "x").resolve()) and cfg.data.categories == (CHIHUAHUA,)


def test_example_configs_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "configs" / "examples"
    formats = {p.stem: load_config(p).data.format for p in sorted(root.glob("*.toml"))}
    assert formats == {"coco": "coco", "folder": "folder", "imagenet-boxes": "imagenet-boxes", "voc": "voc"}
    assert load_config(root / "imagenet-boxes.toml").run.growth == 0


# --- one run, three formats -----------------------------------------------------------------


def test_same_photos_and_masks_as_coco_voc_and_folder_give_the_same_records(
        tmp_path: Path, photos: dict[str, Path], one_thread: object) -> None:
    ann, images = make_coco(tmp_path / "coco", photos)
    configs = {
        "coco": f'ann_file = "{ann}"\nimage_dir = "{images}"',
        "voc": f'format = "voc"\nroot = "{make_voc(tmp_path / "voc", photos)}"',
        "folder": f'format = "folder"\nroot = "{make_folder(tmp_path / "folder", photos)}"',
    }
    ids = {"coco": lambda name: list(OBJECTS).index(name) + 1, "voc": lambda name: f"JPEGImages/{name}.jpg",
           "folder": lambda name: f"photos/{name}.jpg"}
    fields = ("P", "E", "E_celk", "chance", "target")
    results = {}
    for fmt, data in configs.items():
        out = tmp_path / f"run-{fmt}"
        summary = run(load_config(_config(tmp_path / f"{fmt}.toml", data)), out)
        assert summary.failed == 0
        records = [r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines()) if "method" in r]
        by_unit = {}
        for r in records:
            name = Path(r["file"]).stem
            assert r["id"] == ids[fmt](name)  # COCO: its int id; the others: the photo's path under the root
            by_unit[(name, r["class"], r["method"], r["CNN"], r["size"])] = tuple(r[f] for f in fields)
        results[fmt] = by_unit
    # every (photo, category) of the objects, both methods, one size
    assert len(results["coco"]) == 5 * 2
    assert len({v[0] for v in results["coco"].values()}) > 1  # real numbers, not one constant
    assert results["voc"] == results["coco"]
    assert results["folder"] == results["coco"]


def test_a_pickled_sample_carries_its_mask_bit_packed_and_exactly() -> None:
    # Batches reach Ray actors pickled: the mask must come back equal, at an eighth of the bytes.
    import pickle
    from pathlib import Path

    import numpy as np

    from xcnn.data.dataset import Sample

    rng = np.random.default_rng(0)
    mask = rng.random((301, 457)) > 0.7  # not a multiple of 8 pixels
    s = Sample(7, Path("/data/a.jpg"), "dog", mask)
    raw = pickle.dumps(s)
    back = pickle.loads(raw)
    assert (back.image_id, back.file, back.category) == (7, Path("/data/a.jpg"), "dog")
    assert back.mask.dtype == bool and np.array_equal(back.mask, mask)
    assert len(raw) < mask.size / 8 + 1000
