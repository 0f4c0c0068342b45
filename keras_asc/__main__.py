import sys

from keras_asc.cli import main

sys.exit(main())
