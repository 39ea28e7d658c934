import sys

from server.inference.process import main

sys.exit(main())
