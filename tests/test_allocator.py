import subprocess
import sys

# Page faults of re-allocating a freed 64 MiB block, fewest over five tries (the kernel may fault a few
# pages for reasons of its own, e.g. NUMA balancing; the fewest count shows what malloc did).
PROGRAM = """
import resource, sys
import torch
from poemctl.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
counts = []
for _ in range(5):
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2**20 // 4).fill_(1.0)  # the same size again
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(counts))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_freed_block_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert _faults("default") > pages // 2  # glibc's default: handed back and faulted in again
    assert _faults("keep") < pages // 20  # kept: reused as it is
