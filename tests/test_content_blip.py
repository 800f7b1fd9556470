"""BLIP encoder with a tiny randomly initialised checkpoint written by the test (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

av = pytest.importorskip("av")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from twotower.config import BlipConfig  # noqa: E402
from twotower.content.blip import BlipEncoder, frame_times, sample_frames  # noqa: E402
from twotower.content.cache import encode_with_cache  # noqa: E402

WORDS = ["a", "cat", "dog", "on", "the", "grass", "video", "red", "blue", "car", "猫", "狗"]
PROJ = 16
FPS, SECONDS = 10, 2


def write_tiny_blip(directory: Path) -> Path:
    """Save a tiny random BlipForImageTextRetrieval and its BlipProcessor to ``directory``."""
    from transformers import BertTokenizer, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor
    from transformers import BlipConfig as HfBlipConfig

    vocab_file = directory / "vocab.txt"
    directory.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab_file.write_text("\n".join(tokens) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    config = HfBlipConfig(
        text_config={
            "vocab_size": len(tokens),
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            # BLIP's default (1e-10) leaves a random vision model blind: every image would embed the same
            "initializer_range": 0.02,
        },
        image_text_hidden_size=PROJ,
    )
    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(config).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    checkpoint = directory / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    return checkpoint


def write_video(path: Path, seconds: int = SECONDS, fps: int = FPS, size: int = 48) -> None:
    """An MP4 whose frame k is a flat grey of brightness 10 * k (so the decoded frame is identifiable)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(seconds * fps):
            image = np.full((size, size, 3), 10 * k, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("blip")
    checkpoint = write_tiny_blip(root)
    media_dir = root / "media"
    media_dir.mkdir()
    write_video(media_dir / "1.mp4")
    write_video(media_dir / "2.mp4", seconds=1)
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 200, dtype=np.uint8)).save(media_dir / "2.jpg")
    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "caption": ["a cat on the grass", None, "a red car", None],
            "cover_text": [None, "猫", None, None],
        }
    )
    return {"checkpoint": checkpoint, "media_dir": media_dir, "items": items, "root": root}


def encoder(media: dict, combine: str = "concat", **kw) -> BlipEncoder:
    return BlipEncoder(
        BlipConfig(
            checkpoint=media["checkpoint"],
            media_dir=media["media_dir"],
            image_size=32,
            combine=combine,
            batch_size=4,
            **kw,
        )
    )


def test_five_equidistant_frame_times(media: dict) -> None:
    frames, times = sample_frames(media["media_dir"] / "1.mp4", 5)
    # centres of 5 equal segments of a 2 s video: 0.2, 0.6, 1.0, 1.4, 1.8 s (frames 2, 6, 10, 14, 18)
    np.testing.assert_allclose(frame_times(2.0, 5), [0.2, 0.6, 1.0, 1.4, 1.8])
    np.testing.assert_allclose(times, [0.2, 0.6, 1.0, 1.4, 1.8], atol=1e-6)
    brightness = [np.asarray(f).mean() for f in frames]
    np.testing.assert_allclose(brightness, [20, 60, 100, 140, 180], atol=6)
    assert all(f.mode == "RGB" for f in frames)


@pytest.mark.parametrize(
    ("combine", "dim"), [("image", PROJ), ("text", PROJ), ("concat", 2 * PROJ), ("sum", PROJ)]
)
def test_shapes_and_combination_modes(media: dict, combine: str, dim: int) -> None:
    out = encoder(media, combine).encode(media["items"], progress=False)
    assert out.vectors.shape == (4, dim) and out.vectors.dtype == np.float32
    norms = np.linalg.norm(out.vectors, axis=1)
    if combine == "image":  # items 1 (video) and 2 (video + cover) have images
        np.testing.assert_allclose(norms, [1, 1, 0, 0], atol=1e-5)
        assert out.has_content.tolist() == [True, True, False, False]
    elif combine == "text":  # items 1 and 3 have captions, 2 a cover text
        np.testing.assert_allclose(norms, [1, 1, 1, 0], atol=1e-5)
    elif combine == "concat":
        np.testing.assert_allclose(np.linalg.norm(out.vectors[:, :PROJ], axis=1), [1, 1, 0, 0], atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(out.vectors[:, PROJ:], axis=1), [1, 1, 1, 0], atol=1e-5)
        assert out.has_content.tolist() == [True, True, True, False]


def test_parts_match_the_documented_definition(media: dict) -> None:
    enc = encoder(media, "concat")
    out = enc.encode(media["items"], progress=False)
    # image part of item 2 = normalised mean of the normalised embeddings of its 5 frames and its cover
    from PIL import Image

    frames, _ = sample_frames(media["media_dir"] / "2.mp4", 5)
    frames.append(Image.open(media["media_dir"] / "2.jpg").convert("RGB"))
    mean = enc.embed_images(frames).mean(axis=0)
    np.testing.assert_allclose(out.vectors[1, :PROJ], mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(out.vectors[0, PROJ:], enc.embed_texts(["a cat on the grass"])[0], atol=1e-5)
    summed = encoder(media, "sum").encode(media["items"], progress=False)
    np.testing.assert_allclose(summed.vectors, out.vectors[:, :PROJ] + out.vectors[:, PROJ:], atol=1e-5)


def test_deterministic(media: dict) -> None:
    a = encoder(media).encode(media["items"], progress=False).vectors
    b = encoder(media).encode(media["items"], progress=False).vectors
    np.testing.assert_array_equal(a, b)


def test_second_run_hits_the_cache(media: dict, tmp_path: Path) -> None:
    first, stats1 = encode_with_cache(encoder(media), media["items"], tmp_path, progress=False)
    assert (stats1["hits"], stats1["misses"]) == (0, 4)
    second, stats2 = encode_with_cache(encoder(media), media["items"], tmp_path, progress=False)
    assert (stats2["hits"], stats2["misses"]) == (4, 0)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    more = pd.concat(
        [media["items"], pd.DataFrame({"item_id": [5], "caption": ["a dog"]})], ignore_index=True
    )
    _, stats3 = encode_with_cache(encoder(media), more, tmp_path, progress=False)
    assert (stats3["hits"], stats3["misses"]) == (4, 1)
    # a different combination is a different cache entry
    _, stats4 = encode_with_cache(encoder(media, "sum"), media["items"], tmp_path, progress=False)
    assert stats4["hits"] == 0


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    enc = BlipEncoder(BlipConfig(checkpoint=tmp_path / "nope"))
    with pytest.raises(ValueError, match="no config.json"):
        enc.load()


def test_changed_media_file_is_a_cache_miss(media: dict, tmp_path: Path) -> None:
    import shutil

    from PIL import Image

    media_dir = tmp_path / "media"
    shutil.copytree(media["media_dir"], media_dir)
    items = media["items"]

    def run(combine: str = "concat"):
        enc = BlipEncoder(BlipConfig(checkpoint=media["checkpoint"], media_dir=media_dir, image_size=32, combine=combine))
        return encode_with_cache(enc, items, tmp_path / "cache", progress=False)

    first, stats = run()
    assert (stats["hits"], stats["misses"]) == (0, 4)
    # item 2's cover (flat grey) is replaced by noise: item 2 is a miss, the others hit
    noise = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(noise).save(media_dir / "2.jpg")
    second, stats = run()
    assert (stats["hits"], stats["misses"]) == (3, 1)
    np.testing.assert_array_equal(second.vectors[[0, 2, 3]], first.vectors[[0, 2, 3]])
    assert np.abs(second.vectors[1, :PROJ] - first.vectors[1, :PROJ]).max() > 1e-4  # the image part moved
    np.testing.assert_allclose(second.vectors[1, PROJ:], first.vectors[1, PROJ:], atol=1e-6)  # text did not
    direct = BlipEncoder(BlipConfig(checkpoint=media["checkpoint"], media_dir=media_dir, image_size=32))
    np.testing.assert_allclose(second.vectors[1], direct.encode(items.iloc[[1]], progress=False).vectors[0], atol=1e-5)
    # a new file for item 3 (which had none) is a miss; 'text' ignores media and hits across the change
    Image.fromarray(np.full((40, 60, 3), 90, dtype=np.uint8)).save(media_dir / "3.png")
    _, stats = run()
    assert (stats["hits"], stats["misses"]) == (3, 1)
    _, stats = run("text")
    assert stats["misses"] == 4
    Image.fromarray(np.full((40, 60, 3), 30, dtype=np.uint8)).save(media_dir / "4.png")
    _, stats = run("text")
    assert (stats["hits"], stats["misses"]) == (4, 0)


def test_output_dim_and_pca_check_before_encoding(media: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from twotower.config import ConfigError, parse_config
    from twotower.content.item_table import build_item_table

    assert encoder(media, "concat").output_dim() == 2 * PROJ and encoder(media, "sum").output_dim() == PROJ
    monkeypatch.setattr(BlipEncoder, "encode", lambda self, items, progress=True: pytest.fail("encoded"))
    raw = {
        "name": "t",
        "data": {"path": str(tmp_path)},
        "experiments": [{"id": 1, "train_start": "2022-04-25", "train_end": "2022-05-01", "val_date": "2022-05-02"}],
        "content": {
            "encoder": "blip",
            "pca_components": 2 * PROJ + 1,
            "cache_dir": str(tmp_path / "cache"),
            "blip": {"checkpoint": str(media["checkpoint"]), "media_dir": str(media["media_dir"])},
        },
    }
    with pytest.raises(ConfigError, match=f"larger than the blip encoder's output dimension {2 * PROJ}"):
        build_item_table(parse_config(raw), media["items"], np.array([1, 2, 3, 4]), progress=False)
