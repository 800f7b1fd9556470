"""``blip``: BLIP image and text embeddings from a local ``BlipForImageTextRetrieval`` checkpoint.

Per item (files looked up in ``media_dir`` by item id): the video ``<id>.mp4`` (``frames`` equidistant
frames, see :func:`frame_times`), the cover ``<id>.jpg|.jpeg|.png``, and the text (caption and cover text).
Every image is resized to ``image_size`` x ``image_size`` (position embeddings are interpolated when that
differs from the checkpoint's size) and embedded with the vision model's projection (``vision_proj`` of
the [CLS] state, the ITC head); the **image embedding** is the mean of the L2-normalised frame (and cover)
embeddings. The **text embedding** is ``text_proj`` of the text encoder's [CLS] state, L2-normalised.
With ``p = config.image_text_hidden_size`` (256 for BLIP base) the item vector is:

- ``image``: the image embedding, L2-normalised (p);
- ``text``: the text embedding (p);
- ``concat``: [image, text], both L2-normalised (2p);
- ``sum``: image + text, both L2-normalised (p).

A missing part is a zero block. Nothing is downloaded: the checkpoint and processor load with
``local_files_only=True``. Runs on CUDA when available (``device = "auto"``), in batches of ``batch_size``
images or texts.

The cache digest of an item (:meth:`BlipEncoder.input_digests`) covers what ``combine`` uses: the text,
and each media file's name, size and modification time (``stat``, not the bytes: hashing every video on
every run would cost about as much as decoding them; a file replaced by one of the same size and the same
modification time, e.g. ``cp -p`` of another file, is not noticed).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from twotower.config import BlipConfig, ConfigError
from twotower.content.encoder import Encoder, ItemVectors, digests, require_text, text_of
from twotower.data.validate import DataError

VIDEO_SUFFIXES = (".mp4",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TEXT_FIELDS = ("caption", "cover_text")
MAX_TEXT_TOKENS = 64


def frame_times(duration_s: float, n: int) -> np.ndarray:
    """(n,) equidistant sample times: the centres of ``n`` equal segments of ``[0, duration_s)``."""
    return (np.arange(n) + 0.5) * duration_s / n


def sample_frames(path: Path, n: int) -> tuple[list, np.ndarray]:
    """Decode ``n`` frames of the video at ``path`` nearest to :func:`frame_times`.

    Returns (list of n RGB ``PIL.Image``, (n,) float64 timestamps in seconds of the frames taken). Raises
    ``ValueError`` for a file without a decodable video stream.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:  # unknown duration: one pass to find the last frame's time
            duration = max((f.time or 0.0) for f in container.decode(stream)) + 1e-6
            container.seek(0)
        targets = frame_times(duration, n)
        picked: list = []
        previous = None
        for frame in container.decode(stream):
            while len(picked) < n and frame.time >= targets[len(picked)]:
                target = targets[len(picked)]
                closer_previous = previous is not None and target - previous.time < frame.time - target
                picked.append(previous if closer_previous else frame)
            if len(picked) == n:
                break
            previous = frame
        if not picked and previous is None:
            raise ValueError(f"{path}: no decodable frames")
        while len(picked) < n:  # targets after the last decoded frame
            picked.append(previous)
    return [f.to_image().convert("RGB") for f in picked], np.array([f.time for f in picked])


def checkpoint_digest(directory: Path) -> str:
    """sha1 over the names and contents of every file in the checkpoint directory."""
    digest = hashlib.sha1()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _find(media_dir: Path | None, item_id: int, suffixes: tuple[str, ...]) -> Path | None:
    if media_dir is None:
        return None
    for suffix in suffixes:
        path = media_dir / f"{item_id}{suffix}"
        if path.is_file():
            return path
    return None


class BlipEncoder(Encoder):
    """Items -> (n, p) or (n, 2p) float32 BLIP vectors (see the module docstring)."""

    name = "blip"

    def __init__(self, config: BlipConfig) -> None:
        self.config = config
        self._model = None
        self._processor = None
        self._digest: str | None = None
        self.unreadable: list[str] = []

    # ---- loading -------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        import torch

        if self.config.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.config.device

    def load(self) -> None:
        """Load model and processor from ``config.checkpoint`` (local files only)."""
        if self._model is not None:
            return
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        checkpoint = Path(self.config.checkpoint)
        if not (checkpoint / "config.json").is_file():
            raise ValueError(f"BLIP checkpoint directory {checkpoint} has no config.json")
        self._model = BlipForImageTextRetrieval.from_pretrained(checkpoint, local_files_only=True)
        self._model.eval().to(self.device)
        self._processor = BlipProcessor.from_pretrained(checkpoint, local_files_only=True)

    @property
    def projection_dim(self) -> int:
        self.load()
        return int(self._model.config.image_text_hidden_size)

    @property
    def dim(self) -> int:
        return self.projection_dim * (2 if self.config.combine == "concat" else 1)

    def output_dim(self) -> int:
        """From the checkpoint's config (``image_text_hidden_size``), without loading the weights."""
        from transformers import BlipConfig as HfBlipConfig

        checkpoint = Path(self.config.checkpoint)
        if not (checkpoint / "config.json").is_file():
            raise ConfigError(f"BLIP checkpoint directory {checkpoint} has no config.json (content.blip.checkpoint)")
        try:
            p = int(HfBlipConfig.from_pretrained(checkpoint, local_files_only=True).image_text_hidden_size)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{checkpoint / 'config.json'} is not a BLIP config (content.blip.checkpoint): {exc}") from None
        return p * (2 if self.config.combine == "concat" else 1)

    def _media(self, item_id: int) -> list[Path]:
        """The item's files that ``combine`` uses: its video and its cover (either may be absent)."""
        if self.config.combine == "text" or self.config.media_dir is None:
            return []
        media_dir = Path(self.config.media_dir)
        found = (_find(media_dir, item_id, VIDEO_SUFFIXES), _find(media_dir, item_id, IMAGE_SUFFIXES))
        return [path for path in found if path is not None]

    def check_inputs(self, items: pd.DataFrame) -> None:
        """A :class:`DataError` when no item has what ``combine`` uses (text, or a media file)."""
        combine, media_dir = self.config.combine, self.config.media_dir
        ids = items["item_id"].to_numpy(dtype=np.int64)
        problems = []
        if combine != "text":
            if media_dir is None:
                problems.append("content.blip.media_dir is not set")
            elif not Path(media_dir).is_dir():
                problems.append(f"content.blip.media_dir {media_dir} is not a directory")
            elif len(ids) and not any(self._media(int(i)) for i in ids):
                problems.append(
                    f"content.blip.media_dir {media_dir} has no <item_id>.mp4 / .jpg / .jpeg / .png file for "
                    f"any of the {len(ids)} items (e.g. {ids[0]}.mp4)"
                )
            else:
                return
        if combine != "image":
            try:
                require_text(items, TEXT_FIELDS, self.name)
                return
            except DataError as exc:
                problems.append(str(exc))
        raise DataError(f"no item has content for the blip encoder (combine = {combine!r}): " + "; and ".join(problems))

    def input_digests(self, items: pd.DataFrame) -> np.ndarray:
        texts = text_of(items, TEXT_FIELDS) if self.config.combine != "image" else [""] * len(items)
        keys = []
        for item_id, text in zip(items["item_id"].to_numpy(dtype=np.int64), texts, strict=True):
            files = []
            for path in self._media(int(item_id)):
                stat = path.stat()
                files.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
            keys.append("\x1f".join([text, *files]))
        return digests(keys)

    def cache_key(self) -> str:
        if self._digest is None:
            self._digest = checkpoint_digest(Path(self.config.checkpoint))
        c = self.config
        return (
            f"blip-v1;checkpoint={self._digest};frames={c.frames};image_size={c.image_size};"
            f"combine={c.combine};media_dir={c.media_dir};text={','.join(TEXT_FIELDS)}"
        )

    # ---- embedding -----------------------------------------------------------------------------
    def embed_images(self, images: list) -> np.ndarray:
        """PIL images -> (len(images), p) L2-normalised projected image embeddings."""
        import torch

        self.load()
        size = self.config.image_size
        pixels = self._processor.image_processor(
            images, size={"height": size, "width": size}, return_tensors="pt"
        )["pixel_values"].to(self.device)
        interpolate = size != self._model.config.vision_config.image_size
        with torch.inference_mode():
            states = self._model.vision_model(pixel_values=pixels, interpolate_pos_encoding=interpolate)
            projected = self._model.vision_proj(states.last_hidden_state[:, 0, :])
            return torch.nn.functional.normalize(projected, dim=-1).float().cpu().numpy()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (len(texts), p) L2-normalised projected text embeddings."""
        import torch

        self.load()
        max_length = min(MAX_TEXT_TOKENS, self._model.config.text_config.max_position_embeddings)
        tokens = self._processor.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            states = self._model.text_encoder(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            projected = self._model.text_proj(states.last_hidden_state[:, 0, :])
            return torch.nn.functional.normalize(projected, dim=-1).float().cpu().numpy()

    def _item_images(self, item_id: int) -> list:
        """The item's frames (from its video) and cover image; [] when it has neither."""
        from PIL import Image

        media_dir = Path(self.config.media_dir) if self.config.media_dir is not None else None
        images = []
        video = _find(media_dir, item_id, VIDEO_SUFFIXES)
        if video is not None:
            try:
                images += sample_frames(video, self.config.frames)[0]
            except (ValueError, OSError) as exc:
                self.unreadable.append(str(video))
                warnings.warn(f"skipping unreadable video {video}: {exc}", stacklevel=2)
        cover = _find(media_dir, item_id, IMAGE_SUFFIXES)
        if cover is not None:
            with Image.open(cover) as image:
                images.append(image.convert("RGB"))
        return images

    def image_embeddings(self, item_ids: np.ndarray, progress: bool = True) -> np.ndarray:
        """(n, p): per item the mean of its L2-normalised frame and cover embeddings (zeros if none)."""
        p = self.projection_dim
        sums = np.zeros((len(item_ids), p), dtype=np.float64)
        counts = np.zeros(len(item_ids), dtype=np.int64)
        pending: list = []
        owners: list[int] = []

        def flush() -> None:
            if pending:
                np.add.at(sums, np.array(owners), self.embed_images(pending))
                np.add.at(counts, np.array(owners), 1)
                pending.clear()
                owners.clear()

        for row, item_id in enumerate(tqdm(item_ids, desc="blip images", unit="item", disable=not progress)):
            images = self._item_images(int(item_id))
            pending += images
            owners += [row] * len(images)
            if len(pending) >= self.config.batch_size:
                flush()
        flush()
        return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)

    def text_embeddings(self, texts: list[str], progress: bool = True) -> np.ndarray:
        """(n, p): the L2-normalised text embedding of every non-empty text (zeros for empty ones)."""
        out = np.zeros((len(texts), self.projection_dim), dtype=np.float32)
        todo = np.array([i for i, t in enumerate(texts) if t], dtype=np.int64)
        size = self.config.batch_size
        for start in tqdm(
            range(0, len(todo), size), desc="blip texts", unit="batch", disable=not progress or not len(todo)
        ):
            batch = todo[start : start + size]
            out[batch] = self.embed_texts([texts[i] for i in batch])
        return out

    def encode(self, items: pd.DataFrame, progress: bool = True) -> ItemVectors:
        item_ids = items["item_id"].to_numpy(dtype=np.int64)
        p, combine = self.projection_dim, self.config.combine
        image = np.zeros((len(items), p), dtype=np.float32)
        text = np.zeros((len(items), p), dtype=np.float32)
        if combine != "text":
            image = _normalise(self.image_embeddings(item_ids, progress))
        if combine != "image":
            text = self.text_embeddings(text_of(items, TEXT_FIELDS), progress)
        has = (np.abs(image).sum(axis=1) > 0) | (np.abs(text).sum(axis=1) > 0)
        if combine == "image":
            vectors = image
        elif combine == "text":
            vectors = text
        elif combine == "concat":
            vectors = np.concatenate([image, text], axis=1)
        else:
            vectors = image + text
        return ItemVectors(vectors, has)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
