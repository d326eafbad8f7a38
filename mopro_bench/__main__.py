import sys

from mopro_bench.cli import main

sys.exit(main())
