"""The study's images as uint8 tensors on the device: decoding (an image folder, an archive, torchvision's
CIFAR-10), the cache, the splits, and the batched views (crop, flip, mixing) of augment. Torch and numpy only."""
