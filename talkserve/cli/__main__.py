"""`python -m talkserve.cli`."""

import sys

from talkserve.cli import main

sys.exit(main())
