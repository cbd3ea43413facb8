"""Image storage: content-addressed blobs on disk."""

from personavlm.media.blobs import BlobStore, sniff_mime

__all__ = ["BlobStore", "sniff_mime"]
