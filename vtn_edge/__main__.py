import sys

from vtn_edge.cli import main

sys.exit(main())
