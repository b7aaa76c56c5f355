import sys

from ssdkit.cli import main

sys.exit(main())
