"""Dataset layouts: one loader module per layout, plus ``check`` and ``synth``.

``voc`` (VOC07), ``places`` (Places205), ``imagenet`` (ImageNet folders + SimCLR subsets), ``imagenet_ra``
(ImageNet-R/-A), ``webvision`` (WebVision lists, noisy-data training set), ``coco`` (detectron2's datasets/coco),
``check`` (``mopro-bench data check``), ``synth`` + ``render`` (``mopro-bench data synth``), ``common`` (decoding,
transforms, ``ImageList``).
"""

KINDS = ("webvision", "imagenet", "voc07", "places205", "coco", "imagenet-r", "imagenet-a")
