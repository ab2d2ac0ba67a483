"""Data layer: download, conversion ROOT -> HDF5, preprocessing and loading."""
