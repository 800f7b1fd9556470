"""Content-encoder throughput on CPU: e5 on the real KuaiRec captions, BLIP (random weights) on images.

    python benchmarks/content.py [--kuairec ../shared/data/kuairec] [--blip-images 64] [--skip-e5]

Writes ``benchmarks/results/content.json``: e5 captions/s over all 10,732 KuaiRec rows (no cache), the
share of each item's 10 nearest neighbours with the same first-level category (raw 384-d and after PCA 128)
against the share expected by chance, and BLIP images/s at the default ``transformers.BlipConfig`` size
(ViT-B/16 vision tower, the BLIP-base architecture) with randomly initialised weights, at 224 and 384 px.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.content_quality

ROOT = Path(__file__).resolve().parents[1]


def bench_e5(kuairec_dir: Path) -> dict:
    from tests.content_quality import kuairec_caption_items, neighbour_category_share
    from twotower.config import E5Config
    from twotower.content.e5 import E5Encoder
    from twotower.content.pca import ContentPCA

    items = kuairec_caption_items(kuairec_dir / "kuairec_caption_category.csv")
    encoder = E5Encoder(E5Config(fields=("caption", "cover_text")))
    encoder.model.passage(["warm up"])
    started = time.perf_counter()
    out = encoder.encode(items, progress=True)
    seconds = time.perf_counter() - started
    texts = int(out.has_content.sum())
    keep = out.has_content & (items["category"].to_numpy() >= 0)
    labels = items["category"].to_numpy()[keep]
    share, chance = neighbour_category_share(out.vectors[keep], labels, k=10)
    reduced = ContentPCA(128).fit(out.vectors[keep]).transform(out.vectors[keep])
    share_pca, _ = neighbour_category_share(reduced, labels, k=10)
    return {
        "rows": len(items),
        "rows_with_text": texts,
        "seconds": round(seconds, 2),
        "captions_per_second": round(texts / seconds, 1),
        "neighbour_eval_items": int(keep.sum()),
        "categories": int(len(np.unique(labels))),
        "top10_same_category_share": round(share, 4),
        "top10_same_category_share_pca128": round(share_pca, 4),
        "chance_share": round(chance, 4),
    }


def bench_blip(n_images: int, batch_size: int = 32) -> dict:
    import torch
    from PIL import Image
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(BlipConfig()).eval()
    processor = BlipImageProcessor()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)) for _ in range(n_images)]
    result = {
        "config": "transformers.BlipConfig() defaults (BLIP base, ViT-B/16), random weights",
        "batch_size": batch_size,
    }

    def run(batch: list, size: int) -> None:
        pixels = processor(batch, size={"height": size, "width": size}, return_tensors="pt")["pixel_values"]
        interpolate = size != model.config.vision_config.image_size
        with torch.inference_mode():
            states = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=interpolate)
            torch.nn.functional.normalize(model.vision_proj(states.last_hidden_state[:, 0]), dim=-1)

    for size in (224, 384):
        run(images[:2], size)  # warm up
        started = time.perf_counter()
        for start in range(0, n_images, batch_size):
            run(images[start : start + batch_size], size)
        seconds = time.perf_counter() - started
        result[f"images_per_second_{size}px"] = round(n_images / seconds, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kuairec", type=Path, default=ROOT / "../shared/data/kuairec")
    parser.add_argument("--blip-images", type=int, default=64)
    parser.add_argument("--skip-e5", action="store_true")
    parser.add_argument("--skip-blip", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/content.json")
    args = parser.parse_args()
    import torch

    results: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
    }
    if not args.skip_blip:
        results["blip_cpu"] = bench_blip(args.blip_images)
        print(json.dumps(results["blip_cpu"], indent=2), flush=True)
    if not args.skip_e5:
        if (args.kuairec / "kuairec_caption_category.csv").is_file():
            results["e5_kuairec"] = bench_e5(args.kuairec)
            print(json.dumps(results["e5_kuairec"], indent=2), flush=True)
        else:
            results["e5_kuairec"] = f"skipped: {args.kuairec} not found"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
