"""A run's descriptions of its methods, metrics and checks: moved to xcnn.runfolder.descriptions
(the report reads them without importing the experiment)."""
from xcnn.runfolder.descriptions import *  # noqa: F401,F403
