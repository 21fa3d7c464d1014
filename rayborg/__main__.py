import sys

from rayborg.cli import main

sys.exit(main())
