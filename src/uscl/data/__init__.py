"""From the frame store to model-ready batches: SPG items, frames, samplers, loaders, mixup."""

from uscl.data.device_frames import DeviceBatchLoader, DeviceFrames, frames_nbytes
from uscl.data.frame_dataset import FrameDataset
from uscl.data.loader import EpochDataLoader, make_loader
from uscl.data.mixup import mix_views, sample_lambda
from uscl.data.pairs import PairSamplingConfig
from uscl.data.samplers import DistributedVideoSampler
from uscl.data.video_dataset import VideoItemDataset
from uscl.data.views import gpu_batch_to_views

__all__ = [
    "DeviceBatchLoader",
    "DeviceFrames",
    "DistributedVideoSampler",
    "EpochDataLoader",
    "FrameDataset",
    "PairSamplingConfig",
    "VideoItemDataset",
    "frames_nbytes",
    "gpu_batch_to_views",
    "make_loader",
    "mix_views",
    "sample_lambda",
]
