"""xcnn: gradient saliency maps for CNN classifiers, scored against object masks."""
from xcnn.engine import METHODS, Explainer, Maps
from xcnn.errors import XcnnError

__all__ = ["METHODS", "Explainer", "Maps", "XcnnError"]
__version__ = "0.1.0"
