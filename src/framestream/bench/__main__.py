"""``python -m framestream.bench``: run the benchmark suite (see :mod:`framestream.bench.scenarios`)."""

import sys

from framestream.bench.scenarios import main

if __name__ == "__main__":
    sys.exit(main())
