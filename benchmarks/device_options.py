"""Command-line options of the benchmarks that run on the CPU or on a GPU (imported by the
scripts beside it, which Python runs with this folder on its path)."""

from __future__ import annotations

import argparse


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--model, --num-gpus and --gpu-memory-utilization."""
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument(
        "--num-gpus", type=float, default=0.0, help="GPUs of each engine (0: the CPU)"
    )
    parser.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.4,
        help="share of the GPU's memory each engine takes (with --num-gpus)",
    )
