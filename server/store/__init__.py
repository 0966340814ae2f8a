"""The encrypted model store: versioned models with lineage, blobs sealed per object."""
