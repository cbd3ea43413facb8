"""Image storage: content-addressed blobs, the only way to picture bytes (a leaf package)."""

from personavlm.media.blobs import BlobRef, BlobStore, sniff_mime

__all__ = ["BlobRef", "BlobStore", "sniff_mime"]
