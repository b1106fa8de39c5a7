"""The photo library: where it lives and its lock, the SQLite store (migrations, repair), the
HNSW index, the index plan and the indexer, folder probes, forget, the searcher and its typed
request, duplicates, thumbnails and the installed bundles.

Imports `hanclip_model` and nothing above it; prints nothing: progress and notices go through
small interfaces or returned values that the front ends (`hanclip_cli`) render.
"""
