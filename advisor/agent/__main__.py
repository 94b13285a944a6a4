"""`python -m advisor.agent --stdio`: the device agent (see `advisor.agent.server`)."""
import sys

from advisor.agent.server import main

sys.exit(main(sys.argv[1:]))
