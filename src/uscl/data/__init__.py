"""From the frame store to model-ready batches: SPG items, frames, samplers, loaders."""

from uscl.data.device_frames import DeviceBatchLoader, DeviceFrames, frames_nbytes
from uscl.data.frame_dataset import FrameDataset
from uscl.data.frame_items import FrameItemDataset
from uscl.data.loader import EpochDataLoader, make_loader
from uscl.data.pairs import PairSamplingConfig
from uscl.data.samplers import DistributedVideoSampler
from uscl.data.video_dataset import VideoItemDataset

__all__ = [
    "DeviceBatchLoader",
    "DeviceFrames",
    "DistributedVideoSampler",
    "EpochDataLoader",
    "FrameDataset",
    "FrameItemDataset",
    "PairSamplingConfig",
    "VideoItemDataset",
    "frames_nbytes",
    "make_loader",
]
