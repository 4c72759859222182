"""The README's performance tables, rendered from the benches' result files (bench/results/*.json), so that every
figure the README quotes has a file behind it.

    python bench/report.py                      # every table, in Markdown
    python bench/report.py --check README.md    # exit 1 naming the first table that differs from its files
    python bench/report.py --write README.md    # replace each table between its markers

A table sits in the README between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; NAME is one of TABLES.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MARKER = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /bench:(?P=name) -->", re.S)


class Missing(Exception):
    """A result file a table needs is not there (the bench has not been run)."""


def _load(results: Path, name: str) -> dict:
    path = results / name
    if not path.is_file():
        raise Missing(f"{path} is missing: run the bench that writes it (see `python bench/report.py --help`)")
    return json.loads(path.read_text())


def provenance(result: dict, what: str) -> str:
    """One line saying when, on what and from which commits a result file was measured."""
    m = result.get("meta", {})
    git = m.get("git", {})
    commit = str(git.get("commit", "unknown"))[:10] + ("+changes" if git.get("dirty") else "")
    ref = m.get("reference_commit")
    ref = f", reference {str(ref)[:10]}" if ref else ""
    cpu = m.get("cpu", {})
    flags = ", ".join(cpu.get("flags", [])) or "no vector flags recorded"
    loads = f"load {m.get('load_before', float('nan')):.1f} before, {m.get('load_after', float('nan')):.1f} after"
    return (f"{what}: measured {m.get('date', '?')} (commit {commit}{ref}, torch {m.get('torch', '?')}, "
            f"{m.get('threads', '?')} threads, {cpu.get('model', '?')} [{flags}]; {loads}).")  # fmt: skip


def _spread(stats: list[dict]) -> str:
    worst = max(stats, key=lambda s: s["spread"])
    n = min(s["n"] for s in stats)
    noisy = " (noisy)" if any(s["noisy"] for s in stats) else ""
    return f"medians of {n} interleaved repeats, widest spread max/min {worst['spread']:.2f}x{noisy}"


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f}"


def prior_label(e: dict) -> str:
    """What a side-by-side row of bench/prior.py measured, in words."""
    if e["mode"] == "train":
        return f"training step, batch {e['batch']}"
    label = f"sampling, batch {e['batch']}"
    if e["batch"] == 1:
        label += f", {e['tokens']} tokens after a {e['prompt_len']}-token prompt"
    else:
        label += " (all streams), ours priming " + ("one row" if e["prime"] == "expand" else "every row")
    weights, _, decode = e["weights"].partition("+")  # "int8+compile": bench/prior.py --decode compile
    if decode:
        label += f", `--decode {decode}`"
    if weights != "fp32" or decode:
        label += f", our {weights} weights vs its fp32"
    return label


# batch-1 rows measured in a second sitting (`--decode compile`, int4): bench/prior.py --reference --sample-batches 1
# --weights fp32,int8,int4,bf16 --decode compile --json bench/results/prior_batch1_reference.json
DECODE_FILE = "prior_batch1_reference.json"


def side_by_side(results: Path) -> str:
    """The table of "Measuring": bench/prior.py --reference (prior_reference.json) and bench/sampling.py
    --reference (sampling_reference.json)."""
    prior = _load(results, "prior_reference.json")
    sampling = _load(results, "sampling_reference.json")
    decode = _load(results, DECODE_FILE) if (results / DECODE_FILE).is_file() else None
    rows = ["| measurement | reference | jukebox-pl | speed | peak memory |", "|---|---|---|---|---|"]
    first = {(e["mode"], e["batch"], e["weights"]) for e in prior["summary"].get("side_by_side", {}).values()}
    extra = [e for e in (decode or {}).get("summary", {}).get("side_by_side", {}).values()
             if (e["mode"], e["batch"], e["weights"]) not in first]  # fmt: skip
    entries = sorted([*prior["summary"].get("side_by_side", {}).values(), *extra],
                     key=lambda e: (e["preset"], e["n_ctx"], e["mode"] != "sample", e["weights"] != "fp32",
                                    e["batch"], e["prime"]))  # fmt: skip
    stats = []
    for e in entries:
        memory = f"{e['memory_ratio']:.2f}x"
        if e["batch"] > 1:
            memory += f" ({_gb(e['peak_mb'])} vs {_gb(e['reference_peak_mb'])} GB)"
        rows.append(f"| {prior_label(e)} | {e['reference']:.1f} tok/s | {e['jukebox_pl']:.1f} tok/s | "
                    f"{e['ratio']:.2f}x | {memory} |")  # fmt: skip
        stats += [e["reference_stats"], e["jukebox_pl_stats"]]
    song_stats = []
    for row in sampling["rows"]:
        if row["level"] == "song":
            what = f"sampling compute per audio second, `small` 2-level song, batch {row['batch']}"
            if row.get("weights", "fp32") != "fp32":
                what += f", our {row['weights']} weights vs its fp32"
            rows.append(f"| {what} | {row['reference']:.1f} s | {row['jukebox-pl']:.1f} s | {row['ratio']:.2f}x | |")
        else:
            song_stats += [row["reference_stats"], row["jukebox_pl_stats"]]
    out = rows + [""]
    if stats:
        out.append(provenance(prior, "`bench/prior.py --reference`") + " " + _spread(stats).capitalize() + ".")
    if extra:
        spread = _spread([x for e in extra for x in (e["reference_stats"], e["jukebox_pl_stats"])])
        out.append(provenance(decode, f"Rows with `--decode` or int4, from {DECODE_FILE}") + " " + spread.capitalize()
                   + ".")  # fmt: skip
    if song_stats:
        out.append(provenance(sampling, "`bench/sampling.py --reference`") + " " + _spread(song_stats).capitalize()
                   + " per level.")  # fmt: skip
    return "\n".join(out)


def paper(results: Path) -> str:
    """The tables of "Real music": bench/paper.py's own report of paper.json."""
    sys.path.insert(0, str(HERE))
    import paper as paper_bench

    return paper_bench.report(_load(results, "paper.json"))


def vqvae(results: Path) -> str:
    """The VQ-VAE side by side (bench/vqvae.py speed --reference): training step, encode and decode."""
    r = _load(results, "vqvae_speed_reference.json")
    st, rtf = r["step_s"], r["real_time_factors"]
    ref = st["reference"]["median"]
    rows = ["| measurement | reference | jukebox-pl | speed |", "|---|---|---|---|"]
    what = f"`small` training step, batch 4 x {r['audio_s_per_step'] / 4:.1f} s, both levels"
    for name in [n for n in st if n.startswith("jukebox-pl")]:
        label = what + (f", our {name.removeprefix('jukebox-pl ')} vs its fp32" if name != "jukebox-pl" else "")
        rows.append(f"| {label} | {ref:.2f} s | {st[name]['median']:.2f} s | {ref / st[name]['median']:.2f}x |")
    levels = sorted(k for k in rtf if k.startswith("level") and "_" not in k)
    if "reference_encode_all" in rtf:
        ours = 1 / sum(1 / rtf[k]["encode"] for k in levels)  # every level encoded, as the reference does
        rows.append(f"| encode a 30 s clip to every level (x real time) | {rtf['reference_encode_all']:.1f}x | "
                    f"{ours:.1f}x | {ours / rtf['reference_encode_all']:.2f}x |")  # fmt: skip
    for k in levels:
        ref_dec = rtf.get(f"reference_{k}_decode")
        if ref_dec:
            rows.append(f"| decode a 30 s clip from {k.replace('level', 'level ')} (x real time) | {ref_dec:.1f}x | "
                        f"{rtf[k]['decode']:.1f}x | {rtf[k]['decode'] / ref_dec:.2f}x |")  # fmt: skip
        if f"{k}_bf16" in rtf and ref_dec:
            dec = rtf[f"{k}_bf16"]["decode"]
            rows.append(f"| the same under bf16 autocast | {ref_dec:.1f}x | {dec:.1f}x | {dec / ref_dec:.2f}x |")
    spread = _spread(list(st.values()))
    return "\n".join(rows + ["", provenance(r, "`bench/vqvae.py speed --reference`") + f" Steps: {spread}; "
                              f"encode / decode: medians of {r['repeats']}."])  # fmt: skip


def song(results: Path) -> str:
    """The three-level song through each side's own sampler (bench/song.py --reference): compute per audio second
    per level (sampling, then that level's VQ-VAE decode) and for the whole song."""
    r = _load(results, "song_reference.json")
    names = list(r["rows"][0]["tokens"])  # top first
    levels = {name: len(names) - 1 - i for i, name in enumerate(names)}
    head = " | ".join(f"{n} sampling" for n in names)
    rows = [
        f"| batch | side | {head} | decoding, all levels | song | speed |",
        "|---|---" + "|---" * len(names) + "|---|---|---|",
    ]
    for row in r["rows"]:
        st = row["stats"]
        cells = " | ".join(f"{st[f'sample_{levels[n]}']['median']:.2f} s" for n in names)
        decode = sum(st[f"decode_{levels[n]}"]["median"] for n in names)
        side = row["side"].replace("jukebox-pl ", "jukebox-pl, ").replace("+", ", `--decode` ")
        speed = f"**{row['ratio']:.2f}x**" if row["side"] != "reference" else "1.00x"
        rows.append(f"| {row['batch']} | {side} | {cells} | {decode:.2f} s | {st['song']['median']:.2f} s | {speed} |")
    tokens = ", ".join(f"{n} {t}" for n, t in r["rows"][0]["tokens"].items())
    spread = _spread([row["stats"]["song"] for row in r["rows"]])
    return "\n".join(rows + ["", provenance(r, "`bench/song.py --reference`") + f" A {r['seconds']:.2f} s song "
                              f"({tokens} codes per song); {spread}."])  # fmt: skip


def roofline(results: Path) -> str:
    """The batch-1 sampling roofline (bench/roofline.py): bytes per token, the bandwidth floor, the kernels' own
    time, and what the sampler reached against the reference's fp32."""
    r = _load(results, "roofline.json")
    rows = [
        f"| weights | MB read per token | floor at {r['bandwidth_gbs']:.1f} GB/s | the kernels alone | sampler "
        "(measured) | of floor | most vs reference fp32: at the floor | with these kernels | reached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        measured = row.get("measured_ms")
        tail = "| | | | "
        if measured:
            kernel_ceiling = row.get("kernel_ceiling_vs_reference", row["reference_fp32_ms"] / row["kernels_ms"])
            tail = (f"{measured:.1f} ms | {row['floor_ms'] / measured:.0%} | {row['ceiling_vs_reference']:.2f}x | "
                    f"{kernel_ceiling:.2f}x | {row['reached_vs_reference']:.2f}x")  # fmt: skip
        weights = row["weights"].replace("+", ", `--decode ") + ("`" if "+" in row["weights"] else "")
        rows.append(f"| {weights} | {row['mb_per_token']:.0f} | {row['floor_ms']:.1f} ms | "
                    f"{row['kernels_ms']:.1f} ms | {tail} |")  # fmt: skip
    kernels = "; ".join(
        f"{shape} x{k['count']}: fp32 {k['fp32']:.0f}, bf16 {k['bf16']:.0f} (torch's linear "
        f"{k['bf16_plain']:.0f}), int8 {k['int8']:.0f}" + (f", int4 {k['int4']:.0f}" if "int4" in k else "")
        for shape, k in r["kernels"].items()
    )
    return "\n".join(rows + ["", f"Kernel read rates for one row, GB/s (matrix out x in, count): {kernels}.",
                              provenance(r, "`bench/roofline.py`")])  # fmt: skip


def precision(results: Path) -> str:
    """bf16-mixed against fp32 training (bench/precision.py): losses, noise, gaps and step speed."""
    r = _load(results, "precision.json")
    a, b = r["seeds"]
    rows = [f"| stage | loss at step {r['steps']}, fp32 (seeds {a}, {b}) | bf16-mixed (seeds {a}, {b}) | run-to-run "
            "noise (fp32) | bf16-mixed vs fp32, same seed | mean curves | verdict | bf16-mixed step |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for stage, st in r["stages"].items():

        def last(p: str, seed: int, st=st) -> float:
            curve = st["curves"][f"{p} seed {seed}"]
            return sum(curve[-10:]) / len(curve[-10:])

        rows.append(f"| {stage} | {last('32-true', a):.3f}, {last('32-true', b):.3f} | {last('bf16-mixed', a):.3f}, "
                    f"{last('bf16-mixed', b):.3f} | {st['noise']:.3f} | {st['same_seed_gap']:.3f} | "
                    f"{st['mean_gap']:.3f} | {'within noise' if st['within_noise'] else 'outside noise'} | "
                    f"{st['bf16_speedup']:.2f}x fp32 |")  # fmt: skip
    note = (
        f"Losses are the mean of the last 10 steps; gaps are the largest difference between curves smoothed "
        f"over {r['smooth']} steps, after step {r['skip']}."
    )
    return "\n".join(rows + ["", note, provenance(r, "`bench/precision.py`")])


def features(results: Path) -> str:
    """Feature extraction (bench/features.py): throughput and peak memory against the layers kept, beside the
    jukemirlib approach, and the real 5B's memory plan."""
    r = _load(results, "features.json")
    rows = ["| approach | layers built and loaded | clips per batch | parameters | load | audio seconds per second "
            "| peak memory |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    ref = next(row for row in r["rows"] if row["side"] != "jukebox-pl")
    for row in r["rows"]:
        built = 72 if row["side"] != "jukebox-pl" else row["layer"]
        rate = row["audio_s_per_s"]
        speed = rate["median"] / ref["audio_s_per_s"]["median"]
        side = (
            f"jukebox-pl, layer {row['layer']}"
            if row["side"] == "jukebox-pl"
            else f"{row['side']}, layer {row['layer']}"
        )
        rows.append(f"| {side} | {built} | {row['batch']} | {row['params'] / 1e6:.1f} M | {row['load_s']:.2f} s | "
                    f"{rate['median']:.1f} [{rate['min']:.1f}-{rate['max']:.1f}] ({speed:.2f}x) | "
                    f"{row['peak_mb']:.0f} MB |")  # fmt: skip
    plan = ["", "| the released 5B top prior | weights | parameters | one clip's hidden state |", "|---|---|---|---|"]
    for row in r["plan"]:
        plan.append(f"| {row['layers']} layers, {row['weights']} | {row['weight_gb']:.2f} GB | "
                    f"{row['params'] / 1e9:.2f} B | {row['hidden_state_mb']:.0f} MB |")  # fmt: skip
    worst = max(row["audio_s_per_s"]["spread"] for row in r["rows"])
    seconds = r["n_ctx"] * 128 / 44100
    note = (
        f"The 5B's shape (72 blocks, 8 heads, attention blocks of 64 codes) at width {r['width']} with a context "
        f"of {r['n_ctx']} codes ({seconds:.1f} s of audio per clip), fp32 on the CPU. Throughput: medians "
        f"[min-max] of {r['repeats']} rounds, each configuration once per round (in alternating order) in a process "
        f"of its own that runs one clip untimed and times {r.get('batches_per_process', 1)} batches (widest "
        f"spread max/min {worst:.2f}x); peak memory: the largest of its rounds, above a process that only imports "
        f"torch and jukebox_pl ({r['baseline_mb']:.0f} MB)."
    )
    return "\n".join(rows + plan + ["", note, provenance(r, "`bench/features.py`")])


TABLES: dict[str, Callable[[Path], str]] = {
    "side-by-side": side_by_side,
    "paper": paper,
    "vqvae": vqvae,
    "roofline": roofline,
    "precision": precision,
    "song": song,
    "features": features,
}
COMMANDS = {
    "side-by-side": "python bench/prior.py --reference CHECKOUT --presets small --n-ctx 8192 --modes sample,train "
    "--sample-batches 1,16; python bench/sampling.py --reference CHECKOUT --batches 1,8",
    "paper": "make bench-paper",
    "vqvae": "python bench/vqvae.py speed --reference CHECKOUT --precisions fp32,bf16-mixed",
    "roofline": "python bench/roofline.py (after bench/prior.py --reference)",
    "precision": "python bench/precision.py",
    "song": "python bench/song.py --reference CHECKOUT --batches 1,8 --weights fp32,int8+compile,bf16+compile",
    "features": "python bench/features.py (make bench-features)",
}


def render(name: str, results: Path = RESULTS) -> str:
    if name not in TABLES:
        raise Missing(f"no table named {name!r}: choose from {', '.join(TABLES)}")
    return TABLES[name](results).strip()


def blocks(text: str) -> list[tuple[str, str]]:
    """(name, body) of every marked table of a README, in order."""
    return [(m["name"], m["body"].strip()) for m in MARKER.finditer(text)]


def check(readme: Path, results: Path = RESULTS) -> list[str]:
    """Problems, first first: a marked table that differs from what its files render, or that has no files."""
    problems = []
    found = blocks(readme.read_text())
    if not found:
        return [f"{readme}: no <!-- bench:NAME --> markers around any table"]
    for name, body in found:
        try:
            want = render(name, results)
        except Missing as e:
            problems.append(f"{readme}: table bench:{name}: {e} ({COMMANDS.get(name, '')})")
            continue
        if body != want:
            have_lines, want_lines = body.splitlines(), want.splitlines()
            line = next((i for i, (a, b) in enumerate(zip(have_lines, want_lines)) if a != b),
                        min(len(have_lines), len(want_lines)))  # fmt: skip
            shown = want_lines[line] if line < len(want_lines) else "(end of table)"
            problems.append(f"{readme}: table bench:{name} differs from its result files at its line {line + 1}: "
                            f"the files say {shown!r}; run `python bench/report.py --write {readme}`")  # fmt: skip
    return problems


def write(readme: Path, results: Path = RESULTS) -> list[str]:
    """Replace every marked table of which the files exist; return the names written."""
    text, written = readme.read_text(), []

    def replace(m: re.Match) -> str:
        try:
            body = render(m["name"], results)
        except Missing as e:
            print(f"kept bench:{m['name']}: {e}", file=sys.stderr)
            return m.group(0)
        written.append(m["name"])
        return f"<!-- bench:{m['name']} -->\n{body}\n<!-- /bench:{m['name']} -->"

    new = MARKER.sub(replace, text)
    tmp = readme.with_name(f".{readme.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, readme)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="result files: " + "; ".join(f"{k}: {v}" for k, v in COMMANDS.items()),
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files (bench/results)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--check", type=Path, metavar="README", help="exit 1 when a marked table differs from its files")
    g.add_argument("--write", type=Path, metavar="README", help="render every marked table into README")
    p.add_argument("tables", nargs="*", help=f"tables to print (default all: {', '.join(TABLES)})")
    args = p.parse_args(argv)  # fmt: skip
    if args.check:
        problems = check(args.check, args.results)
        for line in problems[:1]:
            print(line, file=sys.stderr)
        if len(problems) > 1:
            print(f"({len(problems) - 1} more tables differ)", file=sys.stderr)
        return 1 if problems else 0
    if args.write:
        print("wrote " + (", ".join(write(args.write, args.results)) or "nothing"))
        return 0
    status = 0
    for name in args.tables or TABLES:
        try:
            print(f"<!-- bench:{name} -->\n{render(name, args.results)}\n<!-- /bench:{name} -->\n")
        except Missing as e:
            print(f"bench:{name}: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
