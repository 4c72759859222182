"""VQ-VAE figures on this machine: training throughput, encode/decode speed, and a quality run.

    python bench/vqvae.py speed   [--reference /path/to/openai-jukebox-checkout]
    python bench/vqvae.py quality [--steps 300] [--data data/toy_shards [more shard folders]]
                                  [--modes auraloss,reference] [--levels bottom middle top]

speed: the `small` preset (the reference's small_vqvae: 2 levels, 22050 Hz), a training step on a batch of
4 x 2 s through both levels (median of interleaved repeats after the same warm-up), and encode / decode
real-time factors for a 30 s clip. With --reference, the reference implementation's own VQ-VAE is timed side
by side on the same input (a plain checkout of openai/jukebox; shims stand in for CUDA and librosa, nothing of
it is imported otherwise), because this machine is shared and absolute timings drift by 20%. Its step is timed without
the zero-weight spectral loss and the no-grad metrics that ours does not compute (--reference-as-shipped keeps
them); figures go to bench/results/vqvae_speed*.json.

quality: the `tiny` preset trained for a fixed budget of steps per level on each shard folder of --data, once per
spectral loss of --modes (vqvae.spectral_mode; same seed and data order for every mode), then measured on
held-out clips: spectral convergence (dB, the reference's metric at 2048/256/1536, pooled over the clips; lower
is better), auraloss's
multi-resolution STFT distance at the preset's sizes (lower is better), codebook usage and perplexity, against
the same level untrained. Held-out clips are new toy songs from another seed (every artist and genre) for a toy
shard folder, and crops of the folder's validation tracks (never trained on) for any other (--heldout).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from pathlib import Path

import measure
import torch

from jukebox_pl.config import load_config
from jukebox_pl.vqvae.losses import Bandwidth
from jukebox_pl.vqvae.model import build_vqvae_level, codebook_stats_from_counts

SR, BATCH, LENGTH = 22050, 4, 44032  # 2 s at 22050 Hz, a multiple of the top hop 256


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ours_step(precision: str = "fp32"):
    """Our small preset's training step with the reference's spectral loss (vqvae.spectral_mode=reference): l2 +
    multispectral + commit per level, what `reference_step` computes once its extras are switched off.
    `precision` "bf16-mixed": the forward under CPU bf16 autocast (what `trainer.precision=bf16-mixed` does),
    weights, gradients and Adam in fp32."""
    cfg = load_config("small", ["vqvae.spectral_mode=reference"]).vqvae
    models = [build_vqvae_level(cfg, level) for level in range(cfg.levels)]
    params = [p for m in models for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=3e-4)
    x = torch.randn(BATCH, 1, LENGTH) * 0.1

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = sum(m(x, Bandwidth()).loss for m in models)
        loss.backward()
        opt.step()

    return step, models


EXTRAS = "its zero-weight spectral loss and its 4 no-grad metrics (spectral convergence, l1, l2, linf)"


def skip_reference_extras(vqvae_module) -> None:
    """Switch off what the reference's VQVAE.forward computes beyond ours: the single-resolution spectral loss it
    weights by `spectral=0.0` (yet computes and backpropagates through) and the metrics it computes under
    no_grad. What remains is the same as ours: l2 + multispectral + commit per level. The loss value is
    unchanged; these terms only return zeros."""
    zero = lambda *args, **kwargs: torch.zeros(())  # noqa: E731
    vqvae_module.spectral_loss = zero  # only its zero-weight term calls it (use_nonrelative_specloss)
    vqvae_module.spectral_convergence = zero  # only its no-grad metric calls it
    loss_fn = vqvae_module._loss_fn

    def training_terms_only(kind, x_target, x_pred, hps):  # its l1 / l2 / linf metrics run under no_grad
        return loss_fn(kind, x_target, x_pred, hps) if torch.is_grad_enabled() else torch.zeros(())

    vqvae_module._loss_fn = training_terms_only


def reference_step(checkout: Path, as_shipped: bool = False):
    """The reference's small_vqvae training step (its VQVAE.forward, loss, backward, Adam); unless `as_shipped`,
    without the extras that ours does not compute (`skip_reference_extras`)."""
    from reference_cpu import use_reference

    use_reference(checkout)
    import jukebox.utils.audio_utils as audio_utils
    import jukebox.utils.dist_adapter as dist_adapter
    import jukebox.vqvae.vqvae as vqvae_module
    from jukebox.vqvae.vqvae import VQVAE

    if not as_shipped:
        skip_reference_extras(vqvae_module)

    dist_adapter.is_available = lambda: False
    audio_utils.stft = lambda sig, hps: torch.view_as_real(
        torch.stft(
            sig,
            hps.n_fft,
            hps.hop_length,
            win_length=hps.window_size,
            window=torch.hann_window(hps.window_size),
            return_complex=True,
        )
    )
    model = VQVAE(
        input_shape=(LENGTH, 1),
        levels=2,
        downs_t=(5, 3),
        strides_t=(2, 2),
        emb_width=64,
        l_bins=1024,
        mu=0.99,
        commit=0.02,
        spectral=0.0,
        multispectral=1.0,
        multipliers=None,
        use_bottleneck=True,
        width=32,
        depth=4,
        m_conv=1.0,
        dilation_growth_rate=3,
        dilation_cycle=None,
        reverse_decoder_dilation=True,
    )
    hps = types.SimpleNamespace(
        sr=SR,
        bandwidth={"l1": 1.0, "l2": 1.0, "spec": 1.0},
        linf_k=2048,
        use_nonrelative_specloss=True,
        multispec_loss_n_fft=(2048, 1024, 512),
        multispec_loss_hop_length=(240, 120, 50),
        multispec_loss_window_size=(1200, 600, 240),
        lmix_l1=0.0,
        lmix_l2=0.0,
        lmix_linf=0.0,
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    x = torch.randn(BATCH, LENGTH, 1) * 0.1

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        _, loss, _ = model(x, hps, "l2")
        loss.backward()
        opt.step()

    return step, model


def speed(args) -> None:
    sitting = measure.Sitting("vqvae_speed", args.threads, args.reference, args.reference_commit)
    torch.manual_seed(0)
    ours, models = ours_step()
    steps = {"jukebox-pl": measure.timed(ours)}
    precisions = [p for p in args.precisions.split(",") if p]
    for precision in [p for p in precisions if p != "fp32"]:
        if precision != "bf16-mixed":
            raise SystemExit(f"--precisions: unknown precision {precision!r}; choose fp32,bf16-mixed")
        torch.manual_seed(0)
        steps[f"jukebox-pl {precision}"] = measure.timed(ours_step(precision)[0])
    reference = None
    if args.reference:
        step, reference = reference_step(Path(args.reference), args.reference_as_shipped)
        steps["reference"] = measure.timed(step)
        what = "as shipped: " + EXTRAS + " included" if args.reference_as_shipped else EXTRAS + " switched off"
        print(f"reference step: {what}; ours: l2 + multispectral (the reference's formula) + commit per level")
    times = measure.interleaved(steps, args.repeats, warmup=1)  # the same warm-up step on both sides
    st = {name: measure.stats(ts) for name, ts in times.items()}
    audio_s = BATCH * LENGTH / SR
    print(f"small preset training step, batch {BATCH} x {LENGTH / SR:.1f} s, both levels, median [min-max] of "
          f"{args.repeats} interleaved repeats:")  # fmt: skip
    for name, s in st.items():
        print(f"  {name:>10}: {measure.cell(s, '.2f')} s/step = {audio_s / s['median']:.2f} audio-seconds/s"
              + measure.flag(s, sitting.load))  # fmt: skip
    result = {"bench": "vqvae_speed", "repeats": args.repeats, "step_s": st, "audio_s_per_step": audio_s}
    if args.reference:
        ratio = st["reference"]["median"] / st["jukebox-pl"]["median"]
        result |= {"speedup": ratio, "reference_as_shipped": args.reference_as_shipped}
        print(f"  speed-up over the reference (medians), same machine, same input: {ratio:.2f}x")
        for name in [n for n in st if n.startswith("jukebox-pl ")]:
            r = st["reference"]["median"] / st[name]["median"]
            result.setdefault("speedups", {})[name.removeprefix("jukebox-pl ")] = r
            print(f"  {name} over the reference's fp32 step: {r:.2f}x")
    clip = torch.randn(1, 1, SR * 30) * 0.1
    print(f"30 s clip, real-time factors (higher is faster; medians of {args.repeats}):")
    rtf = {}
    with torch.inference_mode():
        for m in models:
            m.eval()
            enc = statistics.median(_timed(lambda m=m: m.encode(clip), args.repeats))
            codes = m.encode(clip)
            dec = statistics.median(_timed(lambda m=m, c=codes: m.decode(c), args.repeats))
            rtf[f"level{m.level}"] = {"encode": 30 / enc, "decode": 30 / dec}
            print(f"  level {m.level} (hop {m.hop_length}): encode {30 / enc:.1f}x, decode {30 / dec:.1f}x")
            if "bf16-mixed" in precisions:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    enc = statistics.median(_timed(lambda m=m: m.encode(clip), args.repeats))
                    dec = statistics.median(_timed(lambda m=m, c=codes: m.decode(c), args.repeats))
                rtf[f"level{m.level}_bf16"] = {"encode": 30 / enc, "decode": 30 / dec}
                print(f"  level {m.level} under bf16 autocast: encode {30 / enc:.1f}x, decode {30 / dec:.1f}x")
        if reference is not None:
            reference.eval()
            clip_ntc = clip.permute(0, 2, 1)
            enc = statistics.median(_timed(lambda: reference.encode(clip_ntc), args.repeats))
            zs = reference.encode(clip_ntc)
            rtf["reference_encode_all"] = 30 / enc
            print(f"  reference, all levels encoded: {30 / enc:.1f}x")
            for level in range(2):
                dec = statistics.median(
                    _timed(lambda lv=level: reference.decode(zs[lv:], start_level=lv), args.repeats)
                )
                rtf[f"reference_level{level}_decode"] = 30 / dec
                print(f"  reference level {level}: decode {30 / dec:.1f}x")
    out = args.json or measure.RESULTS / ("vqvae_speed_reference.json" if args.reference else "vqvae_speed.json")
    sitting.finish(result | {"real_time_factors": rtf}, out)


def heldout_clips(folder: Path, seconds: float = 1.5) -> list[dict]:
    """Fresh toy songs (another seed: never seen in training), every artist and genre, cut into mono crops."""
    import csv

    import numpy as np

    from jukebox_pl.audio import read_audio, resample, to_mono
    from jukebox_pl.data.toy import make_toy_dataset

    meta = make_toy_dataset(folder, songs_per_pair=1, seconds=(6.0, 8.0), seed=12345)
    crops = []
    length = int(seconds * SR) // 128 * 128
    for row in csv.DictReader(meta.open(newline="")):
        audio, sr = read_audio(folder / "audio" / row["path"])
        mono = to_mono(resample(audio, sr, SR))[0]
        crops += [mono[s : s + length] for s in range(0, len(mono) - length + 1, length)]
    batch = torch.from_numpy(np.stack(crops))[:, None]
    return [{"audio": b} for b in batch.split(8)]


def validation_clips(
    shards: Path, data_cfg, seconds: float = 1.5, crops_per_track: int = 4, hop: int = 128
) -> list[dict]:
    """Evenly spaced mono crops of the validation tracks of a shard folder (tracks never trained on), each a
    multiple of `hop` samples long."""
    from jukebox_pl.data.datamodule import AudioDataModule

    length = int(seconds * data_cfg.sample_rate) // hop * hop
    dm = AudioDataModule(
        data_cfg,
        shards=str(shards),
        sample_length=length,
        channels=1,
        batch_size=8,
        val_crops_per_track=crops_per_track,
        num_workers=0,
    )
    dm.setup("validate")
    batches = [{"audio": b["audio"]} for b in dm.val_dataloader()]
    if not batches:
        raise SystemExit(f"{shards} has no validation tracks to hold out; prep it with --val-fraction 0.2")
    return batches


def is_toy(shards: Path) -> bool:
    """Shards of the synthetic toy set (every artist one of its four)."""
    import json

    from jukebox_pl.data.toy import ARTISTS

    tracks = json.loads((shards / "manifest.json").read_text())["tracks"]
    return bool(tracks) and all(t["artist"] in ARTISTS for t in tracks)


def evaluate(module, loader) -> dict[str, float]:
    """Spectral convergence (dB), auraloss MR-STFT distance and codebook usage of a level on every batch."""
    from jukebox_pl.vqvae.losses import MRSTFTSettings, pooled_spectral_convergence_db

    module.eval()
    mrstft = MRSTFTSettings.from_config(module.cfg).build()  # the preset's sizes, whatever the training mode
    counts = torch.zeros(module.cfg.l_bins, dtype=torch.long)
    errors, targets, dists, n = [], [], 0.0, 0
    with torch.no_grad():
        for batch in loader:
            x = batch["audio"]
            codes = module.model.encode(x)
            recon = module.model.decode(codes)
            error, target = module.model.spectral.spectral_error_energy(x, recon)
            errors.append(error)
            targets.append(target)
            dists += mrstft(recon.float(), x.float()).item() * x.shape[0]
            n += x.shape[0]
            counts += torch.bincount(codes.reshape(-1), minlength=module.cfg.l_bins)
    stats = codebook_stats_from_counts(counts)
    return {
        "sc_db": pooled_spectral_convergence_db(torch.cat(errors), torch.cat(targets)),
        "mrstft": dists / n,
        "usage": stats["usage"],
        "perplexity": stats["perplexity"],
    }


def quality(args) -> None:
    from jukebox_pl.stages.train_vqvae import train_vqvae
    from jukebox_pl.vqvae.lightning import VQVAELevel
    from jukebox_pl.vqvae.losses import SPECTRAL_MODES

    folders = [Path(d) for d in args.data]
    for data in folders:
        if not (data / "manifest.json").is_file():
            raise SystemExit(f"{data} has no shards; run `make toy-shards` (or `jukebox-pl prep`) first")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in SPECTRAL_MODES]
    if unknown or not modes:
        raise SystemExit(f"--modes {args.modes!r}: choose from {', '.join(SPECTRAL_MODES)}")
    base = [
        f"trainer.max_steps={args.steps}",
        "trainer.enable_progress_bar=false",
        "run.log_audio_every_n_steps=0",
        "trainer.limit_val_batches=0",
        *args.override,
    ]
    header = (
        f"{'data':>14} {'level':>6} {'hop':>4} {'mode':>9} {'SC dB untrained':>15} {'SC dB':>7} {'MR-STFT':>8} "
        f"{'usage':>6} {'perplexity':>10} {'train s':>8}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d, data in enumerate(folders):
            cfg = load_config("tiny", [f"data.shards={data}", *base])
            toy = args.heldout == "toy" or (args.heldout == "auto" and is_toy(data))
            if toy:
                val = heldout_clips(Path(tmp) / f"heldout{d}")
                what = "new toy songs (every artist and genre, a seed never trained on)"
            else:
                val = validation_clips(data, cfg.data)
                what = f"crops of the {data} validation tracks (never trained on)"
            seconds = sum(b["audio"].shape[0] * b["audio"].shape[-1] for b in val) / cfg.data.sample_rate
            print(f"{data}: tiny preset, {args.steps} steps per level and mode; held-out: {seconds:.0f} s of {what}")
            for name in args.levels:
                torch.manual_seed(0)
                untrained = VQVAELevel(cfg.vqvae, name, cfg.data.sample_rate)
                untrained.model.bottleneck.init_codebook(
                    untrained.model.encoder(val[0]["audio"]).permute(0, 2, 1).reshape(-1, cfg.vqvae.emb_width)
                )
                before = evaluate(untrained, val)
                for mode in modes:
                    overrides = [*base, f"vqvae.spectral_mode={mode}"]
                    start = time.perf_counter()
                    trained = train_vqvae(Path(tmp) / f"run{d}_{mode}", name, "tiny", str(data), overrides)
                    elapsed = time.perf_counter() - start
                    after = evaluate(trained, val)
                    row = (
                        f"{data.name[:14]:>14} {name:>6} {trained.hop_length:>4} {mode:>9} {before['sc_db']:>15.2f} "
                        f"{after['sc_db']:>7.2f} {after['mrstft']:>8.3f} {after['usage']:>6.1%} "
                        f"{after['perplexity']:>10.1f} {elapsed:>8.0f}"
                    )
                    rows.append(row)
                    print(f"{header}\n{row}" if len(rows) == 1 else row, flush=True)
    print(
        "\nSC dB: held-out spectral convergence at 2048/256/1536, pooled over the clips (lower is better); "
        "MR-STFT: auraloss's multi-resolution STFT distance at the preset's sizes (lower is better); "
        "usage / perplexity: codebook use on the held-out clips; train s: wall time of the level's training "
        "(shared machine: noisy)."
    )
    print(header)
    print("\n".join(rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--reference", help="a checkout of openai/jukebox to time side by side")
    s.add_argument("--repeats", type=int, default=5, help="interleaved repeats after one warm-up step (>= 3)")
    s.add_argument("--threads", type=int, default=2, help="torch threads, the same on both sides (default 2)")
    s.add_argument("--precisions", default="fp32", help="fp32,bf16-mixed: also time our step (and encode/decode) "
                   "under bf16 autocast")  # fmt: skip
    s.add_argument("--reference-commit", help="the reference checkout's commit, when it has no .git to read it from")
    s.add_argument(
        "--reference-as-shipped",
        action="store_true",
        help="time the reference's step with its zero-weight spectral loss and metrics, as it ships",
    )
    s.add_argument("--json", metavar="PATH", help="where the figures go (default bench/results/vqvae_speed.json, "
                   "vqvae_speed_reference.json with --reference; '-' for none)")  # fmt: skip
    q = sub.add_parser("quality")
    q.add_argument("--steps", type=int, default=300)
    q.add_argument("--data", nargs="+", default=["data/toy_shards"], help="one or more `jukebox-pl prep` folders")
    q.add_argument("--modes", default="auraloss,reference", help="comma-separated vqvae.spectral_mode values")
    q.add_argument(
        "--heldout",
        choices=["auto", "toy", "val"],
        default="auto",
        help="held-out clips: new toy songs (toy), the folder's validation tracks (val), or toy for toy shards (auto)",
    )
    q.add_argument("--levels", nargs="+", default=["bottom", "middle", "top"])
    q.add_argument("--override", nargs="*", default=[], help="config overrides, e.g. vqvae.l_bins=128")
    args = p.parse_args(argv)
    if args.what == "speed" and args.repeats < measure.MIN_REPEATS:
        p.error(f"--repeats {args.repeats}: a figure is the median of at least {measure.MIN_REPEATS}")
    speed(args) if args.what == "speed" else quality(args)


if __name__ == "__main__":
    main()
