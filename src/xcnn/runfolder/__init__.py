"""The run folder's contract, shared by the experiment (which writes it) and the report (which
reads it): imports neither torch nor ``xcnn.experiment``."""
