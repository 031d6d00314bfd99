import sys

from medsplit.results.leaderboard import main

sys.exit(main())
