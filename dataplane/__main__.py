import sys

from dataplane.node import main

if __name__ == "__main__":
    sys.exit(main())
