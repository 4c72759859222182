"""The memory-bandwidth roofline of batch-1 sampling on this machine: how many weight bytes one token reads in each
weight format, how fast this CPU can read memory, and how fast torch's kernels read the prior's own matrices.

At batch 1 a sampler reads every weight of the transformer once per token and does ~2 flops per weight read, so
no kernel can beat bytes per token / memory bandwidth. This bench prints that floor for each `--weights` format,
the time the kernels themselves need for those matrices (their measured GB/s), and, when
bench/results/prior_reference.json is there, what the sampler reached and the most any sampler could reach
against the reference's fp32 figure on this machine.

    python bench/roofline.py                       # the small prior at n_ctx 8192, 2 threads
    python bench/roofline.py --preset tiny --threads 1 --out -

Counted per token: the linear weights of every transformer block (in the format named), the output head (tied
to the token embedding; fp32, or bf16 under `--weights bf16`) and the layer norms; one row of each embedding.
Not counted: the key/value cache the attention reads (for the small prior's sparse attention at a 2048-token
prompt, under 3% of the fp32 weights) and activations (kilobytes). The floor is therefore a lower bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import measure
import torch
from bench_presets import PRIOR_PRESETS

from jukebox_pl.prior.quantize import INT4_GROUPS, Int4Linear, Int8Linear, VectorLinear, block_linears
from jukebox_pl.prior.transformer import AutoregressiveTransformer

FORMATS = ("fp32", "bf16", "int8", "int4")
WEIGHT_BYTES = {"fp32": 4, "bf16": 2, "int8": 1, "int4": 0.5}
STACK_BYTES = 640 << 20  # each kernel runs over copies of a matrix that together exceed the caches (L3 here: 105 MB)
BUFFER_BYTES = 512 << 20


def median_seconds(fn, repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth_gbs() -> float:
    """GB/s of summing a 512 MB fp32 buffer (reads only, the access pattern of a matrix-vector product)."""
    buf = torch.ones(BUFFER_BYTES // 4)
    return BUFFER_BYTES / median_seconds(buf.sum) / 1e9


def matrix_bytes(n_out: int, n_in: int, fmt: str) -> float:
    """Bytes a (out, in) weight matrix reads per token in `fmt`, with its scales (int8: a bf16 per row; int4: a bf16
    scale and offset per group of inputs, the matrix padded as `Int4Linear` pads it)."""
    if fmt == "int8":
        return n_out * n_in + 2 * n_out
    if fmt == "int4":
        n, k = n_out + (-n_out % 16), n_in + (-n_in % INT4_GROUPS[-1])
        group = next(g for g in INT4_GROUPS if k % g == 0)
        return n * k / 2 + 4 * n * (k // group)
    return n_out * n_in * WEIGHT_BYTES[fmt]


def bytes_per_token(model: AutoregressiveTransformer) -> dict[str, dict[str, float]]:
    """Weight bytes read for one token, per format: the blocks' linear weights, the head, the rest."""
    linears = [lin for _, _, lin in block_linears(model)]
    linear_biases = sum(lin.bias.numel() for lin in linears if lin.bias is not None)
    head = model.x_out.weight.numel() if hasattr(model, "x_out") else 0
    norms = sum(p.numel() for n, p in model.named_parameters() if ".ln" in n or n.startswith("ln"))
    out = {}
    for fmt in FORMATS:
        weights = sum(matrix_bytes(*lin.weight.shape, fmt) for lin in linears)
        rest = (head + norms + linear_biases) * (2 if fmt == "bf16" else 4)
        out[fmt] = {"block_linears": weights, "head_and_norms": rest, "total": weights + rest}
    return out


def kernel_gbs(shape: tuple[int, int], fmt: str) -> float:
    """GB/s at which the sampler's kernel for `fmt` reads a (out, in) weight matrix for one row."""
    n_out, n_in = shape
    per_matrix = matrix_bytes(n_out, n_in, "bf16" if fmt == "bf16_plain" else fmt)
    copies = max(2, int(STACK_BYTES // per_matrix))
    layers = []
    for _ in range(copies):
        linear = torch.nn.Linear(n_in, n_out)
        if fmt == "bf16":
            layers.append(VectorLinear.sharing(linear.to(torch.bfloat16)))
        elif fmt == "bf16_plain":  # torch's own bf16 linear, which VectorLinear replaces for one row
            layers.append(linear.to(torch.bfloat16))
        elif fmt in ("int8", "int4"):
            layers.append((Int8Linear if fmt == "int8" else Int4Linear)(linear))
        else:
            layers.append(linear)
    x = torch.randn(1, 1, n_in, dtype=torch.bfloat16 if fmt.startswith("bf16") else torch.float32)

    def run():
        for layer in layers:
            layer(x)

    with torch.inference_mode():
        return copies * per_matrix / median_seconds(run) / 1e9


def measured_sampling(results: Path) -> dict[str, dict]:
    """Batch-1 ms per token of ours (per weight format) and of the reference (fp32, the same sitting) from
    prior_reference.json, and what it lacks (`--decode` rows such as "int8+compile", int4) from
    prior_batch1_reference.json."""
    out = {}
    for name in ("prior_reference.json", "prior_batch1_reference.json"):  # the first sitting's figure wins
        path = results / name
        if not path.is_file():
            continue
        for entry in json.loads(path.read_text())["summary"].get("side_by_side", {}).values():
            if entry["mode"] == "sample" and entry["batch"] == 1 and entry["weights"] not in out:
                out[entry["weights"]] = {"ours_ms": 1000 / entry["jukebox_pl"],
                                         "reference_ms": 1000 / entry["reference"], "file": name}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRIOR_PRESETS))
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=measure.RESULTS, help="where prior_reference.json is read")
    parser.add_argument("--out", help="result file (default bench/results/roofline.json; '-' writes none)")
    args = parser.parse_args(argv)
    sitting = measure.Sitting("roofline", args.threads)
    with torch.device("meta"):
        model = AutoregressiveTransformer(n_ctx=args.n_ctx, blocks=args.n_ctx // 128, **PRIOR_PRESETS[args.preset])
    per_token = bytes_per_token(model)
    shapes: dict[tuple[int, int], int] = {}
    for _, _, lin in block_linears(model):
        shapes[tuple(lin.weight.shape)] = shapes.get(tuple(lin.weight.shape), 0) + 1
    bandwidth = read_bandwidth_gbs()
    print(f"\nmemory read bandwidth: {bandwidth:.1f} GB/s (sum over a 512 MB buffer, median of 7)")
    kernels = {}
    print("\nkernel read rate for one row, GB/s (the blocks' matrices; bf16 plain = torch's linear, which "
          "VectorLinear replaces at batch 1):")  # fmt: skip
    print(f"  {'matrix (out, in)':>18} {'count':>6} {'fp32':>7} {'bf16':>7} {'bf16 plain':>11} {'int8':>7} {'int4':>7}")
    for shape, count in sorted(shapes.items()):
        row = {fmt: kernel_gbs(shape, fmt) for fmt in (*FORMATS, "bf16_plain")}
        kernels[f"{shape[0]}x{shape[1]}"] = {"count": count, **row}
        print(f"  {str(shape):>18} {count:>6} {row['fp32']:>7.1f} {row['bf16']:>7.1f} {row['bf16_plain']:>11.1f} "
              f"{row['int8']:>7.1f} {row['int4']:>7.1f}")  # fmt: skip
    measured = measured_sampling(args.results)
    rows = []
    print(f"\nbatch-1 sampling, {args.preset} prior ({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M "
          f"parameters), {args.threads} threads:")  # fmt: skip
    header = f"  {'weights':>12} {'MB/token':>9} {'floor ms':>9} {'kernels ms':>11}"
    if measured:
        header += f" {'measured ms':>12} {'of floor':>9} {'ceiling vs ref':>15} {'kernels vs ref':>15} {'reached':>8}"
    print(header)
    labels = [*FORMATS, *sorted(k for k in measured if "+" in k and k.split("+")[0] in FORMATS)]
    for label in labels:
        fmt = label.split("+")[0]  # "int8+compile": the same bytes, another way of running the step
        total = per_token[fmt]["total"]
        floor_ms = total / bandwidth / 1e6
        matrices = sum(
            n * matrix_bytes(*shape, fmt) / kernels[f"{shape[0]}x{shape[1]}"][fmt] for shape, n in shapes.items()
        )
        kernel_ms = (matrices + per_token[fmt]["head_and_norms"] / bandwidth) / 1e6
        row = {"weights": label, "mb_per_token": total / 2**20, "floor_ms": floor_ms, "kernels_ms": kernel_ms,
               "bytes": per_token[fmt]}  # fmt: skip
        line = f"  {label:>12} {total / 2**20:>9.0f} {floor_ms:>9.1f} {kernel_ms:>11.1f}"
        if label in measured:
            ours, reference_ms = measured[label]["ours_ms"], measured[label]["reference_ms"]
            row |= {
                "measured_ms": ours,
                "reference_fp32_ms": reference_ms,
                "ceiling_vs_reference": reference_ms / floor_ms,
                "kernel_ceiling_vs_reference": reference_ms / kernel_ms,
                "reached_vs_reference": reference_ms / ours,
            }
            line += f" {ours:>12.1f} {floor_ms / ours:>8.0%} {reference_ms / floor_ms:>14.2f}x"
            line += f" {reference_ms / kernel_ms:>14.2f}x {reference_ms / ours:>7.2f}x"
        rows.append(row)
        print(line)
    if measured:
        print("  (measured: the sampler's batch-1 step and the reference's fp32 step in the same sitting, from "
              f"{', '.join(sorted({m['file'] for m in measured.values()}))}; ceiling = the reference's time over "
              "our floor; kernels = over the kernels' own time; reached = over our measured time)")  # fmt: skip
    figures = {"preset": args.preset, "n_ctx": args.n_ctx, "bandwidth_gbs": bandwidth, "kernels": kernels,
               "rows": rows}  # fmt: skip
    sitting.finish(figures, args.out)
    return figures


if __name__ == "__main__":
    main()
