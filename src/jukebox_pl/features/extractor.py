"""`JukeboxFeatures`: audio (or top-level codes) -> the top prior's activations at chosen layers.

The representation the MIR literature uses (Castellon et al., 2021): the top-level codes of a clip run through
the top prior, stopped after layer L (1-based: the output of transformer block L), at every position. Two readings
of "layer L" exist and both are offered (`output`):

- `block`: the output of block L, as jukemirlib hooks it (`get_activations_custom`);
- `prior`: what a prior built with depth L returns (JukeMIR's `only_encode` forward): block L's output plus the
  per-position conditioning (the timing signal) where the prior adds it back after its last block (priors
  without a merged decoder); for the released `5b` prior, whose decoder is merged, it equals `block`.

Position i has seen only codes before i (the prior is causal), so a clip shorter than the context gives exactly the
first positions of a longer one's activations; rows of a batch are padded at the end and cut back. A clip longer
than one context runs as consecutive windows of `n_ctx` codes, each conditioned on its own offset.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from jukebox_pl.config.levels import level_name
from jukebox_pl.data.vocab import LabelVocab
from jukebox_pl.errors import UserValueError
from jukebox_pl.features.recipe import Conditioning
from jukebox_pl.features.truncated import load_truncated_prior
from jukebox_pl.prior.model import JukeboxPrior
from jukebox_pl.sampling.song_sampler import genre_slots
from jukebox_pl.vqvae.model import VQVAELevelModel

OUTPUTS = ("block", "prior")


def parse_layers(layers) -> list[int]:
    """`36`, `"12,36"`, `[12, 36]` -> sorted distinct layer numbers (1-based)."""
    items = list(layers) if isinstance(layers, list | tuple | range) else [layers]
    out = []
    for item in items:
        for part in str(item).replace(",", " ").split():
            try:
                out.append(int(part))
            except ValueError:
                raise UserValueError(f"--layers {part!r}: give layer numbers (1 = the first block)") from None
    if not out or min(out) < 1:
        raise UserValueError(f"--layers {layers!r}: give layer numbers from 1 (the first block's output)")
    return sorted(set(out))


class JukeboxFeatures(nn.Module):
    """Activations of `layers` (1-based) of a top prior cut after its deepest requested layer (see
    `features.truncated`), with the top VQ-VAE level that encodes audio for it (`encoder`; None: codes only).

    `vocab` turns artist/genre names into the prior's label ids. `forward(audio)` returns {layer: (B, T, width)}.
    """

    def __init__(
        self,
        prior: JukeboxPrior,
        layers,
        encoder: VQVAELevelModel | None = None,
        output: str = "block",
        vocab: LabelVocab | None = None,
    ):
        super().__init__()
        if not prior.is_top:
            raise UserValueError(
                f"features read the top prior; this is the prior of level {level_name(prior.level, prior.levels)}"
            )
        if output not in OUTPUTS:
            raise UserValueError(f"output={output!r}; choose one of {', '.join(OUTPUTS)}")
        self.layers = parse_layers(layers)
        depth = len(prior.prior.transformer._attn_mods)
        if self.layers[-1] > depth:
            raise UserValueError(f"layer {self.layers[-1]} does not exist: this prior has layers 1..{depth}")
        if encoder is not None and encoder.hop_length != prior.hop_length:
            raise UserValueError(
                f"the VQ-VAE level has a hop of {encoder.hop_length} samples, the prior reads codes of "
                f"{prior.hop_length}: they are not the same level"
            )
        self.prior, self.encoder, self.output, self.vocab = prior, encoder, output, vocab

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run: str | Path, layers, weights: str = "fp32", output: str = "block", codes_only: bool = False,
                 allow_mismatch: bool = False) -> JukeboxFeatures:  # fmt: skip
        """From a run folder (trained, imported with `import-openai`, or in the Hub layout): its top prior, cut
        after the deepest of `layers` and loaded in the `weights` precision, and its top VQ-VAE level (unless
        `codes_only`)."""
        from jukebox_pl.sampling.models import check_vqvae, prior_checkpoint, vocab_of
        from jukebox_pl.vqvae.vqvae import VQVAE, level_checkpoint

        run, layers = Path(run), parse_layers(layers)
        # the top level is "top" up to three levels, else the highest number (`config.levels.level_names`)
        named = [p.name.removeprefix("prior_") for p in run.glob("prior_*") if p.is_dir()]
        numbered = [int(n) for n in named if n.isdigit()]
        path = prior_checkpoint(run, "top" if "top" in named or not numbered else str(max(numbered)))
        prior, hp = load_truncated_prior(path, layers[-1], weights)
        encoder = None
        if not codes_only:
            top = level_name(prior.level, prior.levels)
            vqvae = VQVAE.from_run(run, [top])
            check_vqvae(prior, vqvae, path, str(level_checkpoint(run, top)), allow_mismatch)
            encoder = vqvae.level(prior.level).eval()
        return cls(prior, layers, encoder, output, vocab_of(hp))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, layers, **kwargs) -> JukeboxFeatures:
        """From a run in the Hub layout: a local folder or a Hub id (`owner/name`); `kwargs` as `from_run`."""
        from jukebox_pl.hub.folder import resolve_folder
        from jukebox_pl.sampling.pretrained_run import run_folder

        folder, _ = run_folder(resolve_folder(name_or_path))
        return cls.from_run(folder, layers, **kwargs)

    # -- shapes -----------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.prior.sample_rate

    @property
    def hop_length(self) -> int:
        return self.prior.hop_length

    @property
    def n_ctx(self) -> int:
        return self.prior.n_ctx

    @property
    def width(self) -> int:
        return self.prior.cfg.width

    @property
    def codes_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    # -- audio -> codes -----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Mono audio (B, T) at the model's rate -> top-level codes (B, ceil(T / hop))."""
        if self.encoder is None:
            raise UserValueError("these features were built without the VQ-VAE (codes only): pass codes")
        weight = next(self.encoder.parameters())
        return self.encoder.encode(audio.reshape(audio.shape[0], 1, -1).to(weight.device, weight.dtype))

    # -- labels -----------------------------------------------------------------------------------------
    def label_inputs(
        self,
        artists: list[int],
        genres: list[list[int]],
        total_samples: list[int],
        offsets: list[int],
    ) -> dict[str, torch.Tensor]:
        """Per-row label ids, song lengths and window offsets (samples) -> the batch keys the prior reads."""
        n, out = len(artists), {}
        for key in self.prior.batch_keys:
            if key == "artist":
                out[key] = torch.tensor(artists, dtype=torch.long)
            elif key == "genres":
                slots = getattr(getattr(self.prior, "y_emb", None), "max_genres", 0)
                out[key] = genre_slots(genres, slots)
            elif key == "total_length":
                out[key] = torch.tensor(total_samples, dtype=torch.long)
            elif key == "offset":
                out[key] = torch.tensor(offsets, dtype=torch.long)
            elif key == "lyrics":  # no lyrics: the reference's empty lyric window
                out[key] = torch.zeros(n, self.prior.n_tokens, dtype=torch.long)
            else:
                raise UserValueError(
                    f"this prior is conditioned on {key!r} (an extra conditioner), which features do not supply"
                )
        return out

    def recipe_inputs(self, n: int, conditioning: Conditioning | None = None, track_samples: int = 0):
        """The batch keys for `n` rows all conditioned as `conditioning` says (default: the recipe's)."""
        cond = conditioning or Conditioning()
        artist, genre = cond.names(None, None)
        artist_id, genre_ids = cond.ids(self.vocab, artist, genre, strict=True)
        total = cond.total_samples(track_samples, self.hop_length, self.sample_rate)
        offset = cond.offset_samples(self.hop_length, self.sample_rate)
        return self.label_inputs([artist_id] * n, [genre_ids] * n, [total] * n, [offset] * n)

    # -- codes -> activations -----------------------------------------------------------------------------
    @torch.no_grad()
    def activations(self, codes: torch.Tensor, inputs: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Top-level codes (B, T) and the batch keys of their first window (`label_inputs`) -> {layer: (B, T,
        width) float32}. T > n_ctx runs consecutive windows, the offset advancing by each window's audio."""
        device = self.prior.prior.pos_emb.pos_emb.device
        codes = codes.to(device).long()
        parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in self.layers}
        for start in range(0, codes.shape[1], self.n_ctx):
            window = {k: v.to(device) for k, v in inputs.items()}
            if start and "offset" in window:
                window["offset"] = window["offset"] + start * self.hop_length
            for layer, acts in self._window(codes[:, start : start + self.n_ctx], window).items():
                parts[layer].append(acts)
        return {layer: torch.cat(chunks, dim=1) for layer, chunks in parts.items()}

    def _window(self, codes: torch.Tensor, inputs: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
        prior, body = self.prior, self.prior.prior
        n = codes.shape[0]
        cond = prior.condition(n, **inputs)
        skip = 0
        if prior.lyrics_mode == "merged":  # [lyric characters, codes] in one sequence: read the codes' positions
            skip = prior.n_tokens
            codes = torch.cat([cond.prefix, codes + prior.n_vocab], dim=1)
        kept = codes.shape[1]
        block = body.transformer._attn_mods[0].attn.block_ctx
        if kept % block:  # factorised attention reads whole rows: pad the end (causal: earlier positions unchanged)
            codes = torch.nn.functional.pad(codes, (0, min(-(-kept // block) * block, body.n_ctx) - kept))
        _, layers = body.hidden(codes, cond.x_cond, cond.y_cond, cond.encoder_kv, all_layers=True,
                                depth=self.layers[-1])  # fmt: skip
        per_position = 0.0 if cond.x_cond is None else cond.x_cond[:, : codes.shape[1]]
        add_back = self.output == "prior" and body.add_cond_after_transformer
        return {n: ((layers[n - 1] + per_position) if add_back else layers[n - 1])[:, skip:kept].float()
                for n in self.layers}  # fmt: skip

    def forward(self, audio: torch.Tensor, conditioning: Conditioning | None = None) -> dict[int, torch.Tensor]:
        """Mono audio (B, T) at the model's rate, all rows conditioned alike -> {layer: (B, codes, width)}."""
        codes = self.encode(audio)
        return self.activations(codes, self.recipe_inputs(codes.shape[0], conditioning, audio.shape[-1]))
