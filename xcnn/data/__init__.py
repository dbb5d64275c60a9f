"""Ground truth: COCO-format datasets, COCO->ImageNet classes, masks."""
