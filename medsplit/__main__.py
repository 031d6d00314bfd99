import sys

from medsplit.cli import main

sys.exit(main())
