"""Feature extraction through Lightning's predict loop: `FeaturesModule` turns a batch of tracks into pooled
activations, `FeatureWriter` writes each as it comes, so a run spreads over every device and node the Trainer is
given (DDP) and an interrupted run keeps everything already written.

Output folder:

    OUT/layer<L>/<key>.npy      one float32 array per track and layer (pooled: (width,), (positions, width) or
                                (windows, width)), written to a temporary name and renamed
    OUT/features.json           the index: settings, per track its source, labels, offset, seconds read and files
    OUT/.parts/rank<R>.jsonl    each process's records as written (merged into features.json at the end)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import BasePredictionWriter

from jukebox_pl.features.extractor import JukeboxFeatures
from jukebox_pl.features.pooling import pool
from jukebox_pl.features.recipe import Conditioning

INDEX_FILE = "features.json"
PARTS = ".parts"
INDEX_FORMAT = "jukebox-pl/features-v1"


def layer_file(out: Path, layer: int, key: str) -> Path:
    return out / f"layer{layer}" / f"{key}.npy"


class FeaturesModule(pl.LightningModule):
    """Wraps `JukeboxFeatures` for `Trainer.predict`: a batch is a list of `features.data.TrackDataset` items;
    the result is one record per track ({key, layers: {layer: array}, labels, ...} or {key, error})."""

    def __init__(self, features: JukeboxFeatures, pool: str | float = "mean", conditioning: Conditioning | None = None):
        super().__init__()
        self.features = features
        self.pool = pool
        self.conditioning = conditioning or Conditioning()
        self.features.eval()

    def _codes(self, items: list[dict]) -> list[torch.Tensor]:
        """Each item's top-level codes: given, or encoded one row at a time. A batch padded to its longest row
        would change the codes near each shorter row's end (the encoder's layers see computed activations of the
        padding where a lone row sees their zero padding), and the prior is what batching pays for."""
        f = self.features
        return [
            f.encode(torch.from_numpy(it["audio"])[None].to(self.device))[0] if it["audio"] is not None
            else it["codes"].to(self.device)
            for it in items
        ]  # fmt: skip

    def _labels(self, item: dict) -> dict:
        f, cond = self.features, self.conditioning
        artist, genre = cond.names(item.get("artist"), item.get("genre"))
        artist_id, genre_ids = cond.ids(f.vocab, artist, genre, strict=False)
        total = cond.total_samples(item["samples"], f.hop_length, f.sample_rate)
        return {"artist": artist, "genre": genre, "artist_id": artist_id, "genre_ids": genre_ids, "total": total,
                "offset": cond.offset_samples(f.hop_length, f.sample_rate)}  # fmt: skip

    @torch.no_grad()
    def predict_step(self, batch: list[dict], batch_idx: int = 0) -> list[dict]:
        f = self.features
        good = [it for it in batch if it["error"] is None]
        out = [{"key": it["key"], "source": it["source"], "error": it["error"]} for it in batch if it["error"]]
        if not good:
            return out
        codes = self._codes(good)
        fits = [not c.numel() or int(c.max()) < f.prior.bins for c in codes]
        for it, c, ok in zip(good, codes, fits):
            if not ok:
                error = f"holds code {int(c.max())}, but the prior reads {f.prior.bins} codes"
                out.append({"key": it["key"], "source": it["source"], "error": error})
        good, codes = [it for it, ok in zip(good, fits) if ok], [c for c, ok in zip(codes, fits) if ok]
        if not good:
            return out
        lengths = [c.numel() for c in codes]
        padded = torch.stack([F.pad(c.long(), (0, max(lengths) - c.numel())) for c in codes])
        labels = [self._labels(it) for it in good]
        inputs = f.label_inputs(
            [lb["artist_id"] for lb in labels], [lb["genre_ids"] for lb in labels], [lb["total"] for lb in labels],
            [lb["offset"] for lb in labels],
        )  # fmt: skip
        acts = f.activations(padded, inputs)
        for row, (it, lb, n) in enumerate(zip(good, labels, lengths)):
            layers = {layer: pool(a[row, :n], self.pool, f.codes_per_second).cpu().numpy() for layer, a in acts.items()}
            out.append({
                "key": it["key"], "source": it["source"], "layers": layers, "artist": lb["artist"],
                "genre": lb["genre"], "artist_id": lb["artist_id"], "genre_ids": lb["genre_ids"],
                "track_artist": it.get("artist"), "track_genre": it.get("genre"),
                "total_seconds": lb["total"] / f.sample_rate, "offset_seconds": lb["offset"] / f.sample_rate,
                "seconds": n * f.hop_length / f.sample_rate, "codes": n,
            })  # fmt: skip
        return out


def _save_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    os.replace(tmp, path)


class FeatureWriter(BasePredictionWriter):
    """Writes each batch's records as they come: arrays under OUT/layer<L>/, index lines under OUT/.parts/."""

    def __init__(self, out: str | Path):
        super().__init__(write_interval="batch")
        self.out = Path(out)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        part = self.out / PARTS / f"rank{trainer.global_rank}.jsonl"
        part.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for record in prediction:
            if record.get("error"):
                lines.append({"key": record["key"], "source": record["source"], "error": record["error"]})
                continue
            files = {}
            for layer, array in record["layers"].items():
                path = layer_file(self.out, layer, record["key"])
                _save_array(path, array)
                files[str(layer)] = str(path.relative_to(self.out))
            lines.append({**{k: v for k, v in record.items() if k != "layers"}, "files": files})
        with open(part, "a") as fh:
            for line in lines:
                fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_records(out: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(tracks, skipped) recorded so far: the index, then every process's part (later lines win); a track whose
    files are gone is not counted as written."""
    tracks, skipped = {}, {}
    index = out / INDEX_FILE
    if index.is_file():
        data = json.loads(index.read_text())
        tracks, skipped = dict(data.get("tracks", {})), dict(data.get("skipped", {}))
    for part in sorted((out / PARTS).glob("rank*.jsonl")) if (out / PARTS).is_dir() else []:
        for line in part.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that track is done again
                continue
            key = record.pop("key")
            if record.get("error"):
                skipped[key] = record
            else:
                tracks[key] = record
                skipped.pop(key, None)
    tracks = {k: r for k, r in tracks.items() if all((out / f).is_file() for f in r.get("files", {}).values())}
    return tracks, skipped


def merge_index(out: Path, settings: dict) -> dict:
    """Fold the parts into OUT/features.json (written atomically) and remove them."""
    tracks, skipped = read_records(out)
    skipped = {k: v for k, v in skipped.items() if k not in tracks}
    index = {"format": INDEX_FORMAT, "settings": settings, "tracks": dict(sorted(tracks.items())),
             "skipped": dict(sorted(skipped.items()))}  # fmt: skip
    tmp = out / f".{INDEX_FILE}.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, out / INDEX_FILE)
    for part in (out / PARTS).glob("rank*.jsonl") if (out / PARTS).is_dir() else []:
        part.unlink()
    return index
