import subprocess
import sys

PROGRAM = """
import resource, sys
import torch
from poemctl.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB, touched, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.empty(64 * 2**20 // 4).fill_(1.0)  # the same size again
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_a_freed_block_is_reused_without_page_faults():
    pages = 64 * 2**20 // 4096
    assert _faults("default") > pages // 2  # glibc's default: handed back and faulted in again
    assert _faults("keep") < pages // 20  # kept: reused as it is
