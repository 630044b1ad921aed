import sys

from framestream.cli.main import main

sys.exit(main())
