"""`xcnn explain` end to end, and the real offline weights on a real photo with a mask."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from xcnn import METHODS, Explainer, models
from xcnn.cli import main
from xcnn.methods.registry import SINGLE_PASS


def test_explain_writes_pictures_and_raw_maps_equal_to_the_engine(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lm = models.load("resnet18", weights="random")
    weights = tmp_path / "w.pth"
    torch.save(lm.model.state_dict(), weights)
    rng = np.random.default_rng(0)
    photo = (rng.random((50, 70, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "p.png"), "--model", "resnet18", "--weights", str(weights),
                 "--target", "7", "--out", str(out), "--save-raw"])
    assert code == 0
    x = lm.normalize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    with Explainer(lm.model) as ex:
        expected = ex.explain(x, 7)
    for m in METHODS:
        png = np.asarray(Image.open(out / f"p-t7-{m}.png"))
        assert png.shape == (50, 70, 3) and png.dtype == np.uint8 and png.max() > png.min()
        np.testing.assert_allclose(np.load(out / f"p-t7-{m}.npy"), expected.get(m)[0].numpy(), rtol=1e-4, atol=1e-6)
    assert (out / "p-t7-all.png").stat().st_size > 0


def test_explain_single_pass_methods_and_grid(tmp_path: Path) -> None:
    """`--methods single-pass`: eleven maps equal to the engine's, and a 12-panel grid figure."""
    torch.manual_seed(0)
    lm = models.load("resnet18", weights="random")
    weights = tmp_path / "w.pth"
    torch.save(lm.model.state_dict(), weights)
    photo = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "p.png"), "--model", "resnet18", "--weights", str(weights),
                 "--target", "3", "--methods", "single-pass", "--out", str(out), "--save-raw"]) == 0
    x = lm.normalize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255)
    with Explainer(lm.model) as ex:
        expected = ex.explain(x, 3, methods=SINGLE_PASS)
    for m in SINGLE_PASS:
        np.testing.assert_allclose(np.load(out / f"p-t3-{m}.npy"), expected.get(m)[0].numpy(), rtol=1e-4, atol=1e-6)
    grid = Image.open(out / "p-t3-all.png")
    # 12 panels in 3 rows of 4 (one row of 12 would be ~0.1 as high as wide for this 4:3 photo).
    assert 0.4 * grid.width < grid.height < grid.width


def test_explain_bad_methods_and_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "p.png")
    base = ["explain", str(tmp_path / "p.png"), "--model", "resnet18", "--weights", "random"]
    assert main([*base, "--methods", "gradcam,layer_cam"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--methods 'gradcam,layer_cam'" in err and "did you mean 'layercam'" in err and "\n" not in err
    assert main([*base, "--ig-steps", "0", "--methods", "integrated_gradients"]) == 2  # the dataclass refuses it
    err = capsys.readouterr().err.strip()
    assert "integrated_gradients steps must be a whole number >= 1, got 0" in err and "\n" not in err
    from xcnn.cli.explain import parse_methods

    assert parse_methods("all") == parse_methods("single-pass,scorecam,integrated_gradients,smoothgrad,occlusion,rise,"
                                                 "ablationcam,lrp_epsilon_plus_flat,lrp_epsilon_gamma_box")
    assert parse_methods("layercam, gradient,gradient") == ("gradient", "layercam")
    assert parse_methods("default") == METHODS


def test_explain_bad_target_and_size_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "p.png")
    for extra, expected in [(["--target", "tabby kat"], "did you mean 'tabby cat'"), (["--size", "big"], "--size 'big'")]:
        code = main(["explain", str(tmp_path / "p.png"), "--model", "resnet18", "--weights", "random", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and "\n" not in err


@pytest.mark.slow
def test_real_mobilenet_points_at_the_cat(tmp_path: Path) -> None:
    """MobileNetV2 with its real ImageNet weights on the demo set's cat photo (chelsea)."""
    from xcnn.data import CocoDataset, demo, dilate

    ann, images = demo.build(tmp_path / "demo")
    (sample,), _ = CocoDataset(ann, images).select(["cat"], 1, seed=0)
    photo = np.asarray(Image.open(sample.file).convert("RGB"))
    lm = models.load("mobilenet_v2")
    x = lm.normalize(torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255)
    cats = [281, 282, 283, 284, 285]
    with Explainer(lm.model) as ex:
        maps = ex.explain(x, lambda logits: torch.tensor(cats)[logits[:, cats].argmax(1)])
        other = ex.explain(x, 504, methods=["gradcam", "guided_backprop"])  # coffee mug
    assert int(maps.logits.argmax()) in cats  # the network does see a cat
    mask = torch.from_numpy(dilate(sample.mask))
    chance = mask.float().mean()
    for m in ("guided_backprop", "gradcam", "guided_gradcam"):
        energy = maps.get(m)[0].pow(2)
        p = (energy * mask).sum() / energy.sum()
        assert p > chance, (m, float(p), float(chance))
    # Grad-CAM follows the class; guided backprop barely does (Adebayo et al. 2018).
    assert (maps.gradcam - other.gradcam).abs().mean() > 0.05


def test_pictures_follow_the_registry() -> None:
    from xcnn import XcnnError
    from xcnn.methods import registry
    from xcnn.render import grey, heat_overlay, picture

    rng = np.random.default_rng(0)
    photo = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    for m in registry.ALL_METHODS:
        heat = registry.get(m).kind == "heat"
        saliency = rng.random((1 if heat else 3, 6, 8)).astype(np.float32)
        expected = heat_overlay(saliency, photo) if heat else grey(saliency)
        np.testing.assert_array_equal(picture(m, saliency, photo), expected)
    with pytest.raises(XcnnError, match="did you mean 'layercam'"):
        picture("layer_cam", np.zeros((1, 6, 8)), photo)


def _photo(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(seed).random((40, 48, 3)) * 255).astype(np.uint8)).save(path)


def test_explain_several_photos_and_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Files and a folder's images (sorted, not its subfolder's), one model load, names that never
    collide, a warning for a non-image file, and each photo's maps as a run of its own gives."""
    for seed, name in enumerate(["a/cat.png", "a/dog.png", "b/cat.png", "c.png", "a/sub/deep.png"]):
        _photo(tmp_path / name, seed)
    (tmp_path / "a" / "notes.txt").write_text("not a photo")
    loads = []
    real_load = models.load
    monkeypatch.setattr(models, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    out = tmp_path / "out"
    base = ["--model", "resnet18", "--weights", "random", "--methods", "gradient,gradcam", "--save-raw"]
    assert main(["explain", str(tmp_path / "a"), str(tmp_path / "b" / "cat.png"), str(tmp_path / "c.png"),
                 str(tmp_path / "a" / "dog.png"), *base, "--out", str(out)]) == 0
    assert len(loads) == 1
    assert "a/notes.txt" in caplog.text and "deep" not in caplog.text
    names = sorted(f.name for f in out.iterdir() if f.name.endswith("-all.png"))
    assert names == ["a_cat-all.png", "b_cat-all.png", "c-all.png", "dog-all.png"]  # dog.png named twice: once
    for name, stem in [("a/cat.png", "a_cat"), ("b/cat.png", "b_cat"), ("c.png", "c")]:
        alone = tmp_path / "alone" / stem
        assert main(["explain", str(tmp_path / name), *base, "--out", str(alone)]) == 0
        np.testing.assert_array_equal(np.load(out / f"{stem}-gradcam.npy"),
                                      np.load(alone / f"{Path(name).stem}-gradcam.npy"))


def test_explain_several_photos_skips_a_damaged_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _photo(tmp_path / "d" / "good.png", 0)
    (tmp_path / "d" / "bad.jpg").write_bytes(Image.new("RGB", (1, 1)).tobytes() + b"\xff\xd8\xff")  # not a JPEG
    good = tmp_path / "good.jpg"
    _photo(good, 1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good.read_bytes()[:200])  # a JPEG header, no picture
    out = tmp_path / "out"
    code = main(["explain", str(tmp_path / "d"), str(broken), "--model", "resnet18", "--weights", "random",
                 "--methods", "gradient", "--out", str(out)])
    assert code == 3
    assert "bad.jpg" in caplog.text and "skipped" in caplog.text and str(broken) in caplog.text
    assert (out / "good-all.png").exists() and not list(out.glob("broken*"))


def test_explain_an_empty_folder_or_missing_photo_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no photos here")
    for path, expected in [(tmp_path / "empty", f"folder {tmp_path / 'empty'} holds no image files"),
                           (tmp_path / "missing.jpg", f"photo {tmp_path / 'missing.jpg'} not found")]:
        assert main(["explain", str(path), "--model", "resnet18", "--weights", "random"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("xcnn: error: ") and expected in err and "\n" not in err


def test_output_stems_never_collide() -> None:
    from xcnn.cli.explain import output_stems

    photos = [Path("x/img/cat.jpg"), Path("y/img/cat.jpg"), Path("a.jpg"), Path("a.png"), Path("img_cat.png"),
              Path("Dog.jpg"), Path("q/dog.jpg")]
    stems = output_stems(photos)
    assert len({s.casefold() for s in stems}) == len(photos)
    assert stems[:2] == ["img_cat", "img_cat_2"] and stems[4] == "img_cat_3" and output_stems([Path("p.png")]) == ["p"]


def test_explain_turns_a_photo_by_its_exif_orientation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera's sideways JPEG (orientation 6) is explained upright, as a viewer shows it, and the
    log says so; its maps are those of the same photo stored upright."""
    stored = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(stored).save(tmp_path / "sideways.jpg", exif=exif)
    with Image.open(tmp_path / "sideways.jpg") as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    upright.save(tmp_path / "upright.png")
    assert upright.size == (40, 56)
    caplog.set_level(logging.INFO, logger="xcnn")
    out = tmp_path / "out"
    assert main(["explain", str(tmp_path / "sideways.jpg"), str(tmp_path / "upright.png"), "--model", "resnet18",
                 "--weights", "random", "--methods", "gradient,gradcam", "--save-raw", "--out", str(out)]) == 0
    assert "sideways.jpg (rotated per EXIF orientation 6): resnet18 explains" in caplog.text
    assert "upright.png: resnet18 explains" in caplog.text
    for m in ("gradient", "gradcam"):
        turned = np.load(out / f"sideways-{m}.npy")
        assert turned.shape[-2:] == (56, 40)
        np.testing.assert_allclose(turned, np.load(out / f"upright-{m}.npy"), rtol=1e-5, atol=1e-6)
