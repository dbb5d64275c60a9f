"""The run folder's file names: moved to xcnn.runfolder.layout (the report reads them too)."""
from xcnn.runfolder.layout import *  # noqa: F401,F403
