"""Backbones (32x32 and ImageNet size) and the triplet GAN.

Import from the modules (`registry`, `resnet`, `alexnet`, `gan`, `names`): the
package itself imports nothing, so that `names` (and the option checks that use
it) stays free of torch.
"""
