"""Issue 19's load benchmark: the corpus 1× and N× over (its files linked under new names), each in a fresh
process: preprocessing time and peak memory, cache size, and the peak memory of a short training run that
reads the cache. Prints a Markdown table.

    python scripts/corpus_load.py CORPUS [--times 16] [--out bench-out/load]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

PREPROCESS = """
import json, resource, sys, time
from poemctl.config import DataConfig
from poemctl.data import cache_path, load_corpus
from poemctl.corpus import corpus_files, corpus_hash
cfg = DataConfig(corpus=sys.argv[1], cache_dir=sys.argv[2])
t = time.perf_counter()
corpus = load_corpus(cfg)
seconds = time.perf_counter() - t
path = cache_path(cfg, corpus.corpus_hash, None)
print(json.dumps({"poems": len(corpus.train) + len(corpus.test), "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "cache_mb": path.stat().st_size / 2**20}))
"""


def _many(corpus: Path, times: int, where: Path) -> Path:
    """A corpus folder holding corpus's files `times` over, linked under new numbers."""
    folder = where / "全唐诗"
    if folder.is_dir():
        return where
    folder.mkdir(parents=True)
    files = sorted((corpus / "全唐诗").glob("poet.tang.*.json"), key=lambda p: int(p.name.split(".")[2]))
    for k in range(times):
        for f in files:
            n = int(f.name.split(".")[2]) + k * 100_000
            os.symlink(f.resolve(), folder / f"poet.tang.{n}.json")
    return where


TRAIN = """
import resource, sys, time
import torch
from poemctl.config import DataConfig, ModelConfig
from poemctl.data import batches, load_corpus, split_batch
from poemctl.registry import MODELS
t = time.perf_counter()
corpus = load_corpus(DataConfig(corpus=sys.argv[1], cache_dir=sys.argv[2]))  # from the cache
model = MODELS.get("torch-lstm")(ModelConfig(vocab_size=len(corpus.vocab)))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
for step, (rows,) in enumerate(batches(corpus.train, 64, shuffle=True)):
    inputs, targets = split_batch(rows)
    out = model(inputs, targets=targets, ignore_index=corpus.vocab.pad_id)
    (out.nll.sum() / out.count.sum()).backward()
    optimizer.step()
    optimizer.zero_grad()
    if step == 19:
        break
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t)
"""


def _train_peak_mb(corpus: Path, cache: Path) -> tuple[float, float]:
    """Peak memory (MB) and seconds of 20 training steps of the course model, from the cache (no evaluation:
    its memory is one batch's, and at 16× the test split takes minutes)."""
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(corpus), str(cache)], check=True, capture_output=True, text=True
    )
    peak, seconds = done.stdout.strip().splitlines()[-1].split()
    return float(peak), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--times", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("bench-out/load"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    rows = []
    for times in (1, args.times):
        corpus = args.corpus if times == 1 else _many(args.corpus, times, args.out / f"corpus-{times}x")
        cache = args.out / f"cache-{times}x"
        done = subprocess.run(
            [sys.executable, "-c", PREPROCESS, str(corpus), str(cache)], check=True, capture_output=True, text=True
        )
        pre = json.loads(done.stdout.strip().splitlines()[-1])
        peak, seconds = _train_peak_mb(corpus, cache)
        rows.append((times, pre, peak, seconds))
        print(f"{times}×: {pre}, training peak {peak:.0f} MB in {seconds:.0f} s", file=sys.stderr)
    base = rows[0]
    print("| corpus | poems | preprocessing | its peak memory | cache | training (20 steps) peak memory |")
    print("| --- | --- | --- | --- | --- | --- |")
    for times, pre, peak, _ in rows:
        ratio = "" if times == 1 else f" ({pre['seconds'] / base[1]['seconds']:.1f}×)"
        mem = "" if times == 1 else f" ({pre['peak_mb'] / base[1]['peak_mb']:.1f}×)"
        cache = "" if times == 1 else f" ({pre['cache_mb'] / base[1]['cache_mb']:.1f}×)"
        train = "" if times == 1 else f" ({peak / base[2]:.1f}×)"
        print(
            f"| {times}× | {pre['poems']:,} | {pre['seconds']:.0f} s{ratio} | {pre['peak_mb']:,.0f} MB{mem} "
            f"| {pre['cache_mb']:,.0f} MB{cache} | {peak:,.0f} MB{train} |"
        )


if __name__ == "__main__":
    main()
