"""Entry point for `python -m poemctl` and `accelerate launch poemctl …` (which runs `python poemctl`)."""

import os
import sys

if not __package__:
    # Run as a folder (`python poemctl`): Python put poemctl/ itself on sys.path, where its module names
    # could shadow top-level ones. Put the folder above it there instead, so `import poemctl` works.
    sys.path[0] = os.path.dirname(os.path.abspath(sys.path[0]))

from poemctl.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
