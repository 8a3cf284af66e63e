"""The frame store: one memory-mappable uint8 array per video plus a manifest."""

from uscl.store.frame_store import FrameStore, StoreWriter, VideoRecord

__all__ = ["FrameStore", "StoreWriter", "VideoRecord"]
