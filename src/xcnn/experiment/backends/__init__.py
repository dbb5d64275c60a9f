"""Backends run the planned batches on Workers and hand every result to the store.

Each module has ``execute(config, batches, store, summary, *, device, save_maps)``; neither the
worker nor the store knows which backend runs it.
"""
