import sys

from xcnn.cli import main

sys.exit(main())
